//! The document operations: announcing an upload (a pre-signed PUT into quarantine),
//! completing it (`doc.uploaded` in the same transaction), rendering a document for a
//! caller, and the demo seed's files (their SQL is `store`'s).

use std::time::Duration;

use axum::http::StatusCode;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde_json::json;
use sqlx::Postgres;
use time::OffsetDateTime;
use uuid::Uuid;

use super::store::{self, DocumentRow};
use super::{
    ALLOWED_CONTENT_TYPES, BORROWER_UPLOAD_URL_TTL, Decision, DocType, Document, DocumentList,
    NewUpload, PutTarget, ReviewView, Upload, filename_at, quarantine_key, review_reason,
    review_reason_at, sanitize_filename,
};
use crate::audit;
use crate::auth::{Actor, ReadScope};
use crate::crypto::field;
use crate::db::{Page, outbox};
use crate::domain::{DocumentState, mask, rfc3339};
use crate::error::{AppError, ErrorCode, FieldError};
use crate::events::Event;
use crate::state::AppState;

/// What a disposed document's filename reads as.
pub const DISPOSED: &str = "(disposed)";

/// The API shape of a document for `actor`: a caller who sees masked PII only (admin) gets
/// neither the original filename nor the reviewer's reason (docs/security.md).
pub async fn render(
    state: &AppState,
    row: &DocumentRow,
    actor: &Actor,
) -> Result<Document, AppError> {
    let masked = actor.masks(&row.owner_subject, row.team.as_deref());
    let key = state.file_key(row.lead_id).await?;
    // A disposed document keeps its row without its name (docs/operations/retention.md).
    let filename = if row.filename_enc.is_empty() {
        DISPOSED.as_bytes().to_vec()
    } else {
        field::decrypt(&key, filename_at(row.id), &row.filename_enc)
            .map_err(|e| anyhow::anyhow!("decrypting a filename: {e}"))?
            .to_vec()
    };
    let review = match (&row.review_decision, row.reviewed_at) {
        (Some(decision), Some(at)) => Some(ReviewView {
            decision: decision.clone(),
            reason: review_reason(&key, row.id, row.review_reason_enc.as_deref())?
                .map(|r| if masked { mask::HIDDEN.to_owned() } else { r }),
            by: row.reviewed_by.clone().unwrap_or_default(),
            at: rfc3339(at),
        }),
        _ => None,
    };
    Ok(Document {
        id: row.id,
        loan_id: row.loan_id,
        filename: if masked {
            mask::filename(&String::from_utf8_lossy(&filename))
        } else {
            String::from_utf8_lossy(&filename).into_owned()
        },
        content_type: row.content_type.clone(),
        size_bytes: row.size_bytes,
        doc_type: row.doc_type.clone(),
        document_request_id: row.document_request_id,
        state: row.state.as_str().to_owned(),
        reason: row.reason.clone(),
        sha256: row.sha256.clone(),
        detected_type: row.detected_type.clone(),
        duplicate_of: row.duplicate_of,
        review,
        uploaded_by: row.uploaded_by.clone(),
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
    })
}

/// A document as it is now (200), for answers after a change.
pub async fn current(state: &AppState, id: Uuid, actor: &Actor) -> Result<Document, AppError> {
    let mut conn = state.db.acquire().await?;
    let row = store::fetch(&mut conn, id, &ReadScope::All, false)
        .await?
        .ok_or_else(AppError::not_found)?;
    drop(conn);
    render(state, &row, actor).await
}

pub fn validate_upload(state: &AppState, input: &NewUpload) -> Result<String, AppError> {
    let limit = state.settings.documents.max_upload_bytes;
    if input.size_bytes > limit {
        return Err(AppError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::FileTooLarge,
            format!("files may be at most {} MB", limit / 1_000_000),
        ));
    }
    let content_type = input.content_type.trim().to_ascii_lowercase();
    if !ALLOWED_CONTENT_TYPES.contains(&content_type.as_str()) {
        return Err(AppError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::UnsupportedFileType,
            "accepted types are PDF, JPEG, PNG, TIFF and HEIC",
        ));
    }
    let mut errors = Vec::new();
    if input.size_bytes == 0 {
        errors.push(FieldError {
            field: "size_bytes".into(),
            message: "must be more than zero".into(),
        });
    }
    if input.filename.chars().count() > 1000 {
        errors.push(FieldError {
            field: "filename".into(),
            message: "must be at most 1000 characters".into(),
        });
    }
    if let Some(sha) = &input.sha256
        && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        errors.push(FieldError {
            field: "sha256".into(),
            message: "must be 64 hex digits".into(),
        });
    }
    if !errors.is_empty() {
        return Err(AppError::validation(errors));
    }
    Ok(content_type)
}

/// Where an upload goes, and who sent it.
pub enum UploadTarget {
    Loan {
        loan_id: Uuid,
        lead_id: Uuid,
    },
    Link {
        loan_id: Uuid,
        lead_id: Uuid,
        link_id: Uuid,
    },
}

/// An announcement that passed validation, with its accepted content type.
#[derive(Clone, Copy)]
pub struct ValidUpload<'a> {
    pub input: &'a NewUpload,
    pub content_type: &'a str,
}

/// The type a new document is filed under: the one given, else its request's, else
/// `other`; a request must be one of the loan's.
async fn filed_under(
    tx: &mut sqlx::PgConnection,
    input: &NewUpload,
    loan_id: Uuid,
) -> Result<String, AppError> {
    match input.document_request_id {
        Some(request) => {
            let requested = crate::requests::ops::doc_type_in_loan(tx, request, loan_id).await?;
            let Some(requested) = requested else {
                return Err(AppError::validation(vec![FieldError {
                    field: "document_request_id".into(),
                    message: "is not a request of this loan".into(),
                }]));
            };
            Ok(input
                .doc_type
                .map(|d| d.as_str().to_owned())
                .unwrap_or(requested))
        }
        None => Ok(input.doc_type.unwrap_or(DocType::Other).as_str().to_owned()),
    }
}

pub async fn start_upload(
    state: &AppState,
    mut tx: sqlx::Transaction<'static, Postgres>,
    target: UploadTarget,
    upload: ValidUpload<'_>,
    actor: &Actor,
    request_id: &str,
) -> Result<Upload, AppError> {
    let ValidUpload {
        input,
        content_type,
    } = upload;
    let (loan_id, lead_id, link_id, uploaded_by) = match target {
        UploadTarget::Loan { loan_id, lead_id } => (loan_id, lead_id, None, "agent"),
        UploadTarget::Link {
            loan_id,
            lead_id,
            link_id,
        } => (loan_id, lead_id, Some(link_id), "borrower"),
    };
    let doc_type = filed_under(&mut tx, input, loan_id).await?;
    let id = Uuid::now_v7();
    let key = state.file_key(lead_id).await?;
    let filename = sanitize_filename(&input.filename);
    let filename_enc = field::encrypt(&key, filename_at(id), filename.as_bytes());
    let mut ttl = Duration::from_secs(state.settings.documents.upload_url_ttl_secs);
    if link_id.is_some() {
        // A borrower's URL outlives a revocation by at most its lifetime: keep it short.
        ttl = ttl.min(BORROWER_UPLOAD_URL_TTL);
    }
    let object = quarantine_key(id);
    store::insert_announced(
        &mut tx,
        &store::Announced {
            id,
            loan_id,
            lead_id,
            document_request_id: input.document_request_id,
            filename_enc: &filename_enc,
            content_type,
            size_bytes: input.size_bytes as i64,
            doc_type: &doc_type,
            created_by: &actor.subject,
            quarantine_key: &object,
            upload_ttl_secs: ttl.as_secs() as f64,
            uploaded_by,
            upload_link_id: link_id,
        },
    )
    .await?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: lead_id,
            actor,
            action: "document.upload_started",
            entity_type: "document",
            entity_id: id,
            request_id: Some(request_id),
            details: json!({ "loan_id": loan_id, "doc_type": doc_type, "size_bytes": input.size_bytes, "uploaded_by": uploaded_by }),
        },
    )
    .await?;
    let url = state
        .storage
        .presign_upload(&object, content_type, input.size_bytes, ttl);
    let row = store::fetch(&mut tx, id, &ReadScope::All, false)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the document just written is missing"))?;
    tx.commit().await?;
    let document = render(state, &row, actor).await?;
    Ok(Upload {
        document,
        upload: PutTarget {
            url: url.to_string(),
            method: "PUT",
            headers: serde_json::Map::from_iter([("Content-Type".to_owned(), json!(content_type))]),
            expires_at: rfc3339(OffsetDateTime::now_utc() + ttl),
        },
    })
}

/// `awaiting_upload` → `uploaded` with its audit row and `doc.uploaded` event, in one
/// transaction; any later state is answered as it is. `link` confines a borrower to the
/// documents of their link.
pub async fn finish_upload(
    state: &AppState,
    id: Uuid,
    link: Option<Uuid>,
    actor: &Actor,
    request_id: &str,
) -> Result<Document, AppError> {
    let mut tx = state.db.begin().await?;
    let row = store::fetch(&mut tx, id, &ReadScope::All, true)
        .await?
        .ok_or_else(AppError::not_found)?;
    if let Some(link) = link {
        let owner = store::link_of(&mut tx, id).await?;
        if owner != Some(link) {
            return Err(AppError::not_found());
        }
    }
    match row.state {
        DocumentState::AwaitingUpload => {
            // Only a file that has arrived: a `complete` said before the PUT would let the
            // PUT come later (after a link's revocation, say) and still be processed.
            match state
                .storage
                .quarantine
                .head(&ObjectPath::from(quarantine_key(id)))
                .await
            {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(AppError::client(
                        StatusCode::CONFLICT,
                        ErrorCode::Conflict,
                        "the file has not arrived yet: PUT it to the upload URL, then complete",
                    ));
                }
                Err(e) => {
                    return Err(AppError::DependencyUnavailable {
                        dependency: "s3",
                        source: e.into(),
                    });
                }
            }
            store::set_state(&mut tx, id, DocumentState::Uploaded).await?;
            audit::record(
                &mut tx,
                audit::Entry {
                    chain: row.lead_id,
                    actor,
                    action: "document.uploaded",
                    entity_type: "document",
                    entity_id: id,
                    request_id: Some(request_id),
                    details: json!({ "loan_id": row.loan_id }),
                },
            )
            .await?;
            outbox::enqueue(
                &mut tx,
                &Event::DocUploaded {
                    document_id: id,
                    loan_id: row.loan_id,
                },
                Some(request_id),
            )
            .await?;
        }
        DocumentState::Expired | DocumentState::Deleted => {
            return Err(AppError::client(
                StatusCode::CONFLICT,
                ErrorCode::Conflict,
                format!("the document is {}; start a new upload", row.state),
            ));
        }
        _ => {}
    }
    let row = store::fetch(&mut tx, id, &ReadScope::All, false)
        .await?
        .ok_or_else(|| anyhow::anyhow!("document vanished"))?;
    tx.commit().await?;
    render(state, &row, actor).await
}

/// A demo file: its name, type, document type, the request it answers, its bytes.
pub struct SeedFile<'a> {
    pub filename: &'a str,
    pub content_type: &'a str,
    pub doc_type: DocType,
    pub document_request_id: Option<Uuid>,
    pub bytes: Vec<u8>,
}

/// A file added as an agent would (announce, PUT into quarantine, complete), for
/// `admin demo-seed`: the pipeline then scans and encrypts it like any other.
pub async fn seed_file(
    state: &AppState,
    actor: &Actor,
    (loan_id, lead_id): (Uuid, Uuid),
    file: SeedFile<'_>,
) -> Result<Uuid, AppError> {
    let SeedFile {
        filename,
        content_type,
        doc_type,
        document_request_id,
        bytes,
    } = file;
    use object_store::ObjectStoreExt;
    let input = NewUpload {
        filename: filename.to_owned(),
        content_type: content_type.to_owned(),
        size_bytes: bytes.len() as u64,
        doc_type: Some(doc_type),
        document_request_id,
        sha256: None,
    };
    let content_type = validate_upload(state, &input)?;
    let tx = state.db.begin().await?;
    let target = UploadTarget::Loan { loan_id, lead_id };
    let upload = start_upload(
        state,
        tx,
        target,
        crate::documents::ops::ValidUpload {
            input: &input,
            content_type: &content_type,
        },
        actor,
        "demo-seed",
    )
    .await?;
    let id = upload.document.id;
    state
        .storage
        .quarantine
        .put(&ObjectPath::from(quarantine_key(id)), bytes.into())
        .await
        .map_err(|e| AppError::DependencyUnavailable {
            dependency: "s3",
            source: e.into(),
        })?;
    finish_upload(state, id, None, actor, "demo-seed").await?;
    Ok(id)
}

/// An agent's review with the reason as written: 422 for a rejection without a reason (the
/// borrower sees it) or a reason over 1000 characters, then as [`review`]. The API and the
/// console both come through here.
pub async fn review_as_written(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    decision: Decision,
    reason: Option<&str>,
    request_id: &str,
) -> Result<Document, AppError> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    let mut errors = Vec::new();
    if matches!(decision, Decision::Reject) && reason.is_none() {
        errors.push(crate::error::FieldError {
            field: "reason".into(),
            message: "is required when rejecting: the borrower sees it".into(),
        });
    }
    crate::requests::check_text("reason", reason.unwrap_or_default(), false, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::validation(errors));
    }
    review(state, actor, id, decision, reason, request_id).await
}

/// An agent's review of an `available` document (`reason` already checked). A rejection
/// puts the document's request back to `rejected` with the reason, and the document stops
/// counting against its link's `max_files`, so the borrower can upload a replacement.
pub async fn review(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    decision_kind: Decision,
    reason: Option<&str>,
    request_id: &str,
) -> Result<Document, AppError> {
    let mut tx = state.db.begin().await?;
    let Some(store::ReviewTarget {
        loan_id,
        lead_id,
        state: doc_state,
        document_request_id: request,
    }) = store::review_target(&mut tx, id, &actor.read_scope()).await?
    else {
        return Err(AppError::not_found());
    };
    crate::loans::ops::writable_loan(&mut tx, loan_id, actor).await?;
    if doc_state != DocumentState::Available {
        return Err(AppError::client(
            StatusCode::CONFLICT,
            ErrorCode::InvalidState,
            format!("only available documents can be reviewed; this one is {doc_state}"),
        ));
    }
    let key = state.file_key(lead_id).await?;
    let decision = match decision_kind {
        Decision::Accept => "accept",
        Decision::Reject => "reject",
    };
    let reason_enc = reason.map(|r| field::encrypt(&key, review_reason_at(id), r.as_bytes()));
    store::set_review(
        &mut tx,
        id,
        decision,
        reason_enc.as_deref(),
        &actor.display_name,
    )
    .await?;
    if let Some(request) = request {
        let (to, event) = match decision_kind {
            Decision::Accept => (crate::requests::RequestState::Accepted, "accepted"),
            Decision::Reject => (crate::requests::RequestState::Rejected, "rejected"),
        };
        let entry = crate::requests::ops::Entry {
            event,
            by: &actor.display_name,
            document: Some(id),
            reason,
        };
        crate::requests::ops::move_request(&mut tx, &key, request, to, &entry).await?;
    }
    audit::record(
        &mut tx,
        audit::Entry {
            chain: lead_id,
            actor,
            action: "document.reviewed",
            entity_type: "document",
            entity_id: id,
            request_id: Some(request_id),
            details: json!({ "decision": decision, "document_request_id": request }),
        },
    )
    .await?;
    outbox::enqueue(
        &mut tx,
        &Event::DocReviewed {
            document_id: id,
            loan_id,
            decision: decision.to_string(),
            request_id: request,
        },
        Some(request_id),
    )
    .await?;
    tx.commit().await?;
    current(state, id, actor).await
}

/// The files that came through a link, oldest first (deleted ones left out).
pub async fn of_link(
    conn: &mut sqlx::PgConnection,
    link: Uuid,
) -> Result<Vec<store::FileRow>, AppError> {
    Ok(store::of_link(conn, link).await?)
}

/// Soft delete (idempotent): the document is no longer served, audited once; 404 for a
/// document the caller cannot see, 403 for one on a loan they may not change.
pub async fn soft_delete(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    request_id: &str,
) -> Result<(), AppError> {
    let mut tx = state.db.begin().await?;
    let row = store::fetch(&mut tx, id, &actor.read_scope(), true)
        .await?
        .ok_or_else(AppError::not_found)?;
    crate::loans::ops::writable_loan(&mut tx, row.loan_id, actor).await?;
    if row.state != DocumentState::Deleted {
        store::set_state(&mut tx, id, DocumentState::Deleted).await?;
        audit::record(
            &mut tx,
            audit::Entry {
                chain: row.lead_id,
                actor,
                action: "document.deleted",
                entity_type: "document",
                entity_id: id,
                request_id: Some(request_id),
                details: json!({ "previous_state": row.state.as_str() }),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A page of the loan's documents, newest first. The page is read in the caller's scope
/// first; only an empty page asks whether the loan itself is visible, so a loan the caller
/// cannot see is 404 rather than an empty list.
pub async fn list(
    state: &AppState,
    actor: &Actor,
    loan_id: Uuid,
    page: Page<Uuid>,
) -> Result<DocumentList, AppError> {
    let mut rows = store::loan_page(
        &state.db,
        loan_id,
        &actor.read_scope(),
        page.after,
        page.limit + 1,
    )
    .await?;
    let next_cursor = crate::db::next_page(&mut rows, page.limit, |r| r.id.to_string());
    if rows.is_empty() {
        let mut conn = state.db.acquire().await?;
        crate::loans::ops::visible_loan(&mut conn, loan_id, actor).await?;
    }
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        items.push(render(state, row, actor).await?);
    }
    Ok(DocumentList { items, next_cursor })
}
