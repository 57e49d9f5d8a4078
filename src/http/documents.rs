//! Documents, first part (docs/security.md, docs/api.md): an agent announces an upload and gets a
//! pre-signed PUT into the quarantine bucket (the service never buffers uploads); the
//! client says `complete`; the document is `uploaded` and `doc.uploaded` is emitted in the
//! same transaction. The scanning/encrypting pipeline consumes that event (next step).

use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::middleware::SideEffects;
use crate::auth::{Actor, ReadScope};
use crate::crypto::field::{self, Location};
use crate::db::{audit, outbox};
use crate::domain::document::{ALLOWED_CONTENT_TYPES, DocType, sanitize_filename};
use crate::domain::mask;
use crate::error::{AppError, AppJson, FieldError};
use crate::http::edge::RequestId;
use crate::http::support::{
    kms_unavailable, push_scope, rfc3339, visible_loan, with_location, writable_loan,
};

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let creating = crate::http::idempotency::layer(
        state,
        OpenApiRouter::new().routes(routes!(create_upload, list_documents)),
    );
    OpenApiRouter::new()
        .routes(routes!(complete))
        .routes(routes!(download))
        .routes(routes!(get_document, delete_document))
        .routes(routes!(upload_url))
        .merge(creating)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUpload {
    filename: String,
    content_type: String,
    size_bytes: u64,
    /// Required for agents; a borrower's upload takes its request's type, else `other`.
    doc_type: Option<DocType>,
    /// The needs-list request this file answers.
    document_request_id: Option<Uuid>,
    /// Hex SHA-256 the client computed, if any (checked by the pipeline).
    sha256: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Document {
    id: Uuid,
    loan_id: Uuid,
    filename: String,
    content_type: String,
    size_bytes: i64,
    doc_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    document_request_id: Option<Uuid>,
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detected_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate_of: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    review: Option<ReviewView>,
    uploaded_by: String,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewView {
    decision: String,
    reason: Option<String>,
    by: String,
    at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PutTarget {
    url: String,
    method: &'static str,
    headers: serde_json::Map<String, serde_json::Value>,
    expires_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Upload {
    document: Document,
    upload: PutTarget,
}

#[derive(Debug, sqlx::FromRow)]
struct DocumentRow {
    id: Uuid,
    loan_id: Uuid,
    lead_id: Uuid,
    document_request_id: Option<Uuid>,
    filename_enc: Vec<u8>,
    content_type: String,
    size_bytes: i64,
    doc_type: String,
    state: String,
    reason: Option<String>,
    sha256: Option<String>,
    detected_type: Option<String>,
    duplicate_of: Option<Uuid>,
    uploaded_by: String,
    review_decision: Option<String>,
    review_reason_enc: Option<Vec<u8>>,
    reviewed_by: Option<String>,
    reviewed_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    /// The loan's owner and team: whom the document's PII is masked for.
    owner_subject: String,
    team: Option<String>,
}

const SELECT_DOCUMENT: &str =
    "select d.id, d.loan_id, d.lead_id, d.document_request_id, d.filename_enc,
        d.content_type, d.size_bytes, d.doc_type, d.state, d.reason, d.sha256, d.detected_type,
        d.duplicate_of, d.uploaded_by, d.review_decision, d.review_reason_enc, d.reviewed_by,
        d.reviewed_at, d.created_at, d.updated_at, o.owner_subject, o.team
   from documents d join loans o on o.id = d.loan_id";

fn filename_at(id: Uuid) -> Location<'static> {
    Location {
        table: "documents",
        column: "filename_enc",
        row: id,
    }
}

/// The API shape of a document for `actor`: a caller who sees masked PII only (admin) gets
/// neither the original filename nor the reviewer's reason (docs/security.md).
async fn render(state: &AppState, row: &DocumentRow, actor: &Actor) -> Result<Document, AppError> {
    let masked = actor.masks(&row.owner_subject, row.team.as_deref());
    let key = state
        .keys
        .file_key(&state.db, row.lead_id)
        .await
        .map_err(kms_unavailable)?;
    let filename = field::decrypt(&key, filename_at(row.id), &row.filename_enc)
        .map_err(|e| anyhow::anyhow!("decrypting a filename: {e}"))?;
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
        state: row.state.clone(),
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

/// An agent's review reason in the clear.
pub fn review_reason(
    key: &[u8; 32],
    document: Uuid,
    sealed: Option<&[u8]>,
) -> Result<Option<String>, AppError> {
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let at = Location {
        table: "documents",
        column: "review_reason_enc",
        row: document,
    };
    let plain = field::decrypt(key, at, sealed)
        .map_err(|e| anyhow::anyhow!("decrypting a review reason: {e}"))?;
    Ok(Some(String::from_utf8_lossy(&plain).into_owned()))
}

/// A document as it is now (200), for answers after a change.
pub async fn current(state: &AppState, id: Uuid, actor: &Actor) -> Result<Response, AppError> {
    let mut conn = state.db.acquire().await?;
    let row = fetch(&mut conn, id, &ReadScope::All, false)
        .await?
        .ok_or_else(AppError::not_found)?;
    drop(conn);
    Ok(AppJson(render(state, &row, actor).await?).into_response())
}

async fn fetch(
    conn: &mut PgConnection,
    id: Uuid,
    scope: &ReadScope,
    for_update: bool,
) -> Result<Option<DocumentRow>, sqlx::Error> {
    let mut query = QueryBuilder::<Postgres>::new(SELECT_DOCUMENT);
    query.push(" where d.id = ").push_bind(id);
    push_scope(&mut query, "o", scope);
    if for_update {
        query.push(" for update of d");
    }
    query.build_query_as().fetch_optional(conn).await
}

/// The longest a borrower's pre-signed PUT lives (`documents.upload_url_ttl_secs` may be
/// shorter); an object written after its link's revocation is rejected `link_revoked`.
const BORROWER_UPLOAD_URL_TTL: Duration = Duration::from_secs(300);

/// The opaque quarantine object key of a document: ids only, never a name.
pub fn quarantine_key(document: Uuid) -> String {
    format!("uploads/{document}")
}

/// Announce an agent-side upload; answers the Upload shape with a pre-signed PUT URL.
#[utoipa::path(post, path = "/v1/loans/{id}/documents", tag = "documents", params(("id" = Uuid, Path)),
    request_body = NewUpload,
    responses(
        (status = 201, description = "Upload target", body = Upload),
        (status = 422, description = "Too large, unsupported type or invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn create_upload(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(request_id): Extension<RequestId>,
    Path(loan_id): Path<Uuid>,
    AppJson(input): AppJson<NewUpload>,
) -> Result<Response, AppError> {
    let content_type = validate_upload(&state, &input)?;
    if input.doc_type.is_none() {
        return Err(AppError::validation(vec![FieldError {
            field: "doc_type".into(),
            message: "is required".into(),
        }]));
    }
    let mut tx = state.db.begin().await?;
    let lead_id = writable_loan(&mut tx, loan_id, &actor).await?;
    let target = UploadTarget::Loan { loan_id, lead_id };
    let upload = start_upload(
        &state,
        tx,
        target,
        &input,
        &content_type,
        &actor,
        &request_id.0,
    )
    .await?;
    Ok(upload_created(upload))
}

/// Declared size, type and fields, checked before anything is written.
fn validate_upload(state: &AppState, input: &NewUpload) -> Result<String, AppError> {
    let limit = state.settings.documents.max_upload_bytes;
    if input.size_bytes > limit {
        return Err(AppError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            "file_too_large",
            format!("files may be at most {} MB", limit / 1_000_000),
        ));
    }
    let content_type = input.content_type.trim().to_ascii_lowercase();
    if !ALLOWED_CONTENT_TYPES.contains(&content_type.as_str()) {
        return Err(AppError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_file_type",
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

fn upload_created(upload: Upload) -> Response {
    let location = format!("/v1/documents/{}", upload.document.id);
    with_location(StatusCode::CREATED, upload, &location)
}

/// Write the `awaiting_upload` document and its audit row, commit, and pre-sign the PUT.
async fn start_upload(
    state: &AppState,
    mut tx: sqlx::Transaction<'static, Postgres>,
    target: UploadTarget,
    input: &NewUpload,
    content_type: &str,
    actor: &Actor,
    request_id: &str,
) -> Result<Upload, AppError> {
    let (loan_id, lead_id, link_id, uploaded_by) = match target {
        UploadTarget::Loan { loan_id, lead_id } => (loan_id, lead_id, None, "agent"),
        UploadTarget::Link {
            loan_id,
            lead_id,
            link_id,
        } => (loan_id, lead_id, Some(link_id), "borrower"),
    };
    let doc_type = match input.document_request_id {
        Some(request) => {
            // language=PostgreSQL
            let requested: Option<String> = sqlx::query_scalar(
                "select doc_type from document_requests where id = $1 and loan_id = $2",
            )
            .bind(request)
            .bind(loan_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(requested) = requested else {
                return Err(AppError::validation(vec![FieldError {
                    field: "document_request_id".into(),
                    message: "is not a request of this loan".into(),
                }]));
            };
            input
                .doc_type
                .map(|d| d.as_str().to_owned())
                .unwrap_or(requested)
        }
        None => input.doc_type.unwrap_or(DocType::Other).as_str().to_owned(),
    };
    let id = Uuid::now_v7();
    let key = state
        .keys
        .file_key(&state.db, lead_id)
        .await
        .map_err(kms_unavailable)?;
    let filename = sanitize_filename(&input.filename);
    let filename_enc = field::encrypt(&key, 1, filename_at(id), filename.as_bytes());
    let mut ttl = Duration::from_secs(state.settings.documents.upload_url_ttl_secs);
    if link_id.is_some() {
        // A borrower's URL outlives a revocation by at most its lifetime: keep it short.
        ttl = ttl.min(BORROWER_UPLOAD_URL_TTL);
    }
    let object = quarantine_key(id);
    // language=PostgreSQL
    sqlx::query(
        "insert into documents (id, loan_id, lead_id, document_request_id, filename_enc, content_type,
                                size_bytes, doc_type, uploaded_by, created_by, quarantine_key, upload_expires_at,
                                upload_link_id)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $12, $9, $10, now() + make_interval(secs => $11), $13)",
    )
    .bind(id)
    .bind(loan_id)
    .bind(lead_id)
    .bind(input.document_request_id)
    .bind(&filename_enc)
    .bind(content_type)
    .bind(input.size_bytes as i64)
    .bind(&doc_type)
    .bind(&actor.subject)
    .bind(&object)
    .bind(ttl.as_secs() as f64)
    .bind(uploaded_by)
    .bind(link_id)
    .execute(&mut *tx)
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
    let row = fetch(&mut tx, id, &ReadScope::All, false)
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentList {
    items: Vec<Document>,
    next_cursor: Option<String>,
}

/// The loan's documents, newest first.
#[utoipa::path(get, path = "/v1/loans/{id}/documents", tag = "documents",
    params(("id" = Uuid, Path), crate::http::support::PageParams),
    responses((status = 200, description = "Documents", body = DocumentList)))]
async fn list_documents(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(loan_id): Path<Uuid>,
    query: Result<
        axum::extract::Query<crate::http::support::PageParams>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<AppJson<DocumentList>, AppError> {
    let page = crate::http::support::PageParams::from_query(query)?.page::<Uuid>()?;
    let mut query = QueryBuilder::<Postgres>::new(SELECT_DOCUMENT);
    query.push(" where d.loan_id = ").push_bind(loan_id);
    push_scope(&mut query, "o", &actor.read_scope());
    if let Some(after) = page.after {
        query.push(" and d.id < ").push_bind(after);
    }
    query
        .push(" order by d.id desc limit ")
        .push_bind(page.limit + 1);
    let mut rows: Vec<DocumentRow> = query.build_query_as().fetch_all(&state.db).await?;
    let next_cursor = crate::http::support::next_page(&mut rows, page.limit, |r| r.id.to_string());
    if rows.is_empty() {
        let mut conn = state.db.acquire().await?;
        visible_loan(&mut conn, loan_id, &actor).await?;
    }
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        items.push(render(&state, row, &actor).await?);
    }
    Ok(AppJson(DocumentList { items, next_cursor }))
}

/// A document's metadata and state.
#[utoipa::path(get, path = "/v1/documents/{id}", tag = "documents", params(("id" = Uuid, Path)),
    responses((status = 200, description = "The document", body = Document)))]
async fn get_document(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<Uuid>,
) -> Result<AppJson<Document>, AppError> {
    let mut conn = state.db.acquire().await?;
    let row = fetch(&mut conn, id, &actor.read_scope(), false)
        .await?
        .ok_or_else(AppError::not_found)?;
    drop(conn);
    Ok(AppJson(render(&state, &row, &actor).await?))
}

/// The client finished its PUT: the document becomes `uploaded` and the pipeline starts.
/// Idempotent: completing again answers the current state.
#[utoipa::path(post, path = "/v1/documents/{id}/complete", tag = "documents", params(("id" = Uuid, Path)),
    responses(
        (status = 202, description = "Processing", body = Document),
        (status = 409, description = "Expired or deleted", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn complete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let mut conn = state.db.acquire().await?;
    let row = fetch(&mut conn, id, &actor.read_scope(), false)
        .await?
        .ok_or_else(AppError::not_found)?;
    // Write scope on the document's own loan, not merely a role that writes somewhere: a
    // caller who reads everything (compliance) and writes their own files (agent) must
    // not complete another team's upload.
    writable_loan(&mut conn, row.loan_id, &actor).await?;
    drop(conn);
    finish_upload(&state, id, None, &actor, &request_id.0).await
}

/// `awaiting_upload` → `uploaded` with its audit row and `doc.uploaded` event, in one
/// transaction; any later state is answered as it is. `link` confines a borrower to the
/// documents of their link.
async fn finish_upload(
    state: &AppState,
    id: Uuid,
    link: Option<Uuid>,
    actor: &Actor,
    request_id: &str,
) -> Result<Response, AppError> {
    let mut tx = state.db.begin().await?;
    let row = fetch(&mut tx, id, &ReadScope::All, true)
        .await?
        .ok_or_else(AppError::not_found)?;
    if let Some(link) = link {
        // language=PostgreSQL
        let owner: Option<Uuid> =
            sqlx::query_scalar("select upload_link_id from documents where id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        if owner != Some(link) {
            return Err(AppError::not_found());
        }
    }
    match row.state.as_str() {
        "awaiting_upload" => {
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
                        "conflict",
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
            // language=PostgreSQL
            sqlx::query(
                "update documents set state = 'uploaded', updated_at = now() where id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
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
                "doc.uploaded",
                json!({ "documentId": id, "loanId": row.loan_id }),
                Some(request_id),
            )
            .await?;
        }
        "expired" | "deleted" => {
            return Err(AppError::client(
                StatusCode::CONFLICT,
                "conflict",
                format!("the document is {}; start a new upload", row.state),
            ));
        }
        _ => {}
    }
    let row = fetch(&mut tx, id, &ReadScope::All, false)
        .await?
        .ok_or_else(|| anyhow::anyhow!("document vanished"))?;
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        AppJson(render(state, &row, actor).await?),
    )
        .into_response())
}

/// The decrypted bytes of an `available` document (GET and HEAD); audited. An integrity
/// failure mid-stream aborts the connection rather than delivering a silently short file.
#[utoipa::path(get, path = "/v1/documents/{id}/content", tag = "documents", params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The document's bytes", content_type = "application/octet-stream"),
        (status = 404, description = "No such document, or not available", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn download(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(request_id): Extension<RequestId>,
    Extension(side_effects): Extension<SideEffects>,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    use crate::crypto::stream::Decryptor;
    use futures::StreamExt;
    use object_store::ObjectStoreExt;

    let mut tx = state.db.begin().await?;
    let row = fetch(&mut tx, id, &actor.read_scope(), false)
        .await?
        .ok_or_else(AppError::not_found)?;
    if actor.masks(&row.owner_subject, row.team.as_deref()) {
        return Err(AppError::forbidden());
    }
    if row.state != "available" {
        return Err(AppError::client(
            StatusCode::NOT_FOUND,
            "not_found",
            "the document is not available",
        ));
    }
    side_effects.require()?;
    actor.require_recent_auth(state.settings.auth.step_up_max_age_secs)?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: row.lead_id,
            actor: &actor,
            action: "document.downloaded",
            entity_type: "document",
            entity_id: id,
            request_id: Some(&request_id.0),
            details: json!({ "loan_id": row.loan_id }),
        },
    )
    .await?;
    // language=PostgreSQL
    let (object_key, detected): (Option<String>, Option<String>) =
        sqlx::query_as("select object_key, detected_type from documents where id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    let object_key =
        object_key.ok_or_else(|| anyhow::anyhow!("an available document has no object"))?;
    let key = state
        .keys
        .file_key(&state.db, row.lead_id)
        .await
        .map_err(kms_unavailable)?;
    let filename = render(&state, &row, &actor).await?.filename;
    let source = state
        .storage
        .documents
        .get(&ObjectPath::from(object_key.as_str()))
        .await
        .map_err(|e| AppError::DependencyUnavailable {
            dependency: "s3",
            source: e.into(),
        })?
        .into_stream();
    let decryptor = Decryptor::new(&key, id);
    let plain = futures::stream::unfold(Some((source, decryptor)), |state| async move {
        let (mut source, mut decryptor) = state?;
        match source.next().await {
            Some(Ok(chunk)) => match decryptor.push(&chunk) {
                Ok(plain) => Some((Ok(bytes::Bytes::from(plain)), Some((source, decryptor)))),
                Err(e) => Some((Err(std::io::Error::other(e)), None)),
            },
            Some(Err(e)) => Some((Err(std::io::Error::other(e)), None)),
            None => match decryptor.finish() {
                Ok(last) => Some((Ok(bytes::Bytes::from(last)), None)),
                Err(e) => Some((Err(std::io::Error::other(e)), None)),
            },
        }
    });
    let mut response = axum::body::Body::from_stream(plain).into_response();
    let headers = response.headers_mut();
    let content_type = detected.unwrap_or_else(|| "application/octet-stream".into());
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&row.size_bytes.to_string()) {
        headers.insert(header::CONTENT_LENGTH, value);
    }
    if let Ok(value) =
        HeaderValue::from_str(&crate::domain::document::content_disposition(&filename))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Borrower routes: the upload-link token is the only credential.
pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(borrower_upload))
        .routes(routes!(borrower_complete))
}

/// The audit actor of a borrower acting through a link (no account, no PII).
pub fn borrower_actor(link: Uuid) -> Actor {
    Actor::borrower(format!("borrower:link:{link}"))
}

/// A borrower announces a file; answers the Upload shape with a pre-signed PUT URL.
#[utoipa::path(post, path = "/v1/public/upload-links/{token}/files", tag = "borrowers",
    params(("token" = String, Path)), request_body = NewUpload,
    responses(
        (status = 201, description = "Upload target", body = Upload),
        (status = 404, description = "No such link", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired, revoked or full", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn borrower_upload(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(token): Path<String>,
    AppJson(input): AppJson<NewUpload>,
) -> Result<Response, AppError> {
    let mut tx = state.db.begin().await?;
    let link = crate::http::upload_links::active_link(&mut tx, &token, true).await?;
    let content_type = validate_upload(&state, &input)?;
    let actor = borrower_actor(link.id);
    let target = UploadTarget::Link {
        loan_id: link.loan_id,
        lead_id: link.lead_id,
        link_id: link.id,
    };
    let upload = start_upload(
        &state,
        tx,
        target,
        &input,
        &content_type,
        &actor,
        &request_id.0,
    )
    .await?;
    Ok(upload_created(upload))
}

/// A borrower's PUT finished: start processing (idempotent).
#[utoipa::path(post, path = "/v1/public/upload-links/{token}/files/{document_id}/complete", tag = "borrowers",
    params(("token" = String, Path), ("document_id" = Uuid, Path)),
    responses((status = 202, description = "Processing", body = Document)))]
async fn borrower_complete(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path((token, document)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let mut conn = state.db.acquire().await?;
    let link = crate::http::upload_links::active_link(&mut conn, &token, false).await?;
    drop(conn);
    let actor = borrower_actor(link.id);
    // A link reaches only its own documents: another loan's id is simply not found.
    finish_upload(&state, document, Some(link.id), &actor, &request_id.0).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadUrlParams {
    filename: String,
    content_type: String,
    size_bytes: u64,
    doc_type: Option<DocType>,
}

/// The brief's shortcut: an upload target from query parameters. Creates an
/// `awaiting_upload` document that expires if no file arrives.
#[utoipa::path(get, path = "/v1/loans/{id}/docs/upload-url", tag = "documents",
    params(("id" = Uuid, Path), UploadUrlParams),
    responses(
        (status = 201, description = "Upload target", body = Upload),
        (status = 422, description = "Too large, unsupported type or invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn upload_url(
    state: State<AppState>,
    actor: Extension<Actor>,
    request_id: Extension<RequestId>,
    Extension(side_effects): Extension<SideEffects>,
    loan: Path<Uuid>,
    query: Result<axum::extract::Query<UploadUrlParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    // It creates a document: never from a cross-site navigation carrying a cookie.
    side_effects.require()?;
    let axum::extract::Query(params) = query.map_err(|_| {
        crate::http::support::malformed("filename, content_type and size_bytes are required")
    })?;
    let input = NewUpload {
        filename: params.filename,
        content_type: params.content_type,
        size_bytes: params.size_bytes,
        doc_type: Some(params.doc_type.unwrap_or(DocType::Other)),
        document_request_id: None,
        sha256: None,
    };
    create_upload(state, actor, request_id, loan, AppJson(input)).await
}

/// Soft delete: the document is no longer served; the encrypted object stays until
/// retention purges it.
#[utoipa::path(delete, path = "/v1/documents/{id}", tag = "documents", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted")))]
async fn delete_document(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let mut tx = state.db.begin().await?;
    let row = fetch(&mut tx, id, &actor.read_scope(), true)
        .await?
        .ok_or_else(AppError::not_found)?;
    writable_loan(&mut tx, row.loan_id, &actor).await?;
    if row.state != "deleted" {
        // language=PostgreSQL
        sqlx::query("update documents set state = 'deleted', updated_at = now() where id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit::record(
            &mut tx,
            audit::Entry {
                chain: row.lead_id,
                actor: &actor,
                action: "document.deleted",
                entity_type: "document",
                entity_id: id,
                request_id: Some(&request_id.0),
                details: json!({ "previous_state": row.state }),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A file added as an agent would (announce, PUT into quarantine, complete), for
/// `admin demo-seed`: the pipeline then scans and encrypts it like any other.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn seed_file(
    state: &AppState,
    actor: &Actor,
    (loan_id, lead_id): (Uuid, Uuid),
    filename: &str,
    content_type: &str,
    doc_type: DocType,
    document_request_id: Option<Uuid>,
    bytes: Vec<u8>,
) -> Result<Uuid, AppError> {
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
    let upload = start_upload(state, tx, target, &input, &content_type, actor, "demo-seed").await?;
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
