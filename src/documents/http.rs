//! Documents, first part (docs/security.md, docs/api.md): an agent announces an upload and gets a
//! pre-signed PUT into the quarantine bucket (the service never buffers uploads); the
//! client says `complete`; the document is `uploaded` and `doc.uploaded` is emitted in the
//! same transaction. The scanning/encrypting pipeline consumes that event (next step).

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use object_store::path::Path as ObjectPath;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ops::{UploadTarget, finish_upload, render, start_upload, validate_upload};
use super::store::{self, fetch};
use super::{Decision, Document, DocumentList, NewUpload, Upload, ops};
use crate::actor::SideEffects;
use crate::audit;
use crate::auth::Actor;
use crate::documents::DocType;
use crate::domain::DocumentState;
use crate::error::{AppError, AppJson, ErrorCode, FieldError};
use crate::http::edge::RequestId;
use crate::http::support::with_location;
use crate::loans::ops::writable_loan;
use crate::state::AppState;

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
        .routes(routes!(review_document))
        .merge(creating)
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
    actor: Actor,
    request_id: RequestId,
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
        crate::documents::ops::ValidUpload {
            input: &input,
            content_type: &content_type,
        },
        &actor,
        &request_id.0,
    )
    .await?;
    Ok(upload_created(upload))
}

/// Declared size, type and fields, checked before anything is written.
pub fn upload_created(upload: Upload) -> Response {
    let location = format!("/v1/documents/{}", upload.document.id);
    with_location(StatusCode::CREATED, upload, &location)
}

/// The loan's documents, newest first.
#[utoipa::path(get, path = "/v1/loans/{id}/documents", tag = "documents",
    params(("id" = Uuid, Path), crate::http::support::PageParams),
    responses((status = 200, description = "Documents", body = DocumentList)))]
async fn list_documents(
    State(state): State<AppState>,
    actor: Actor,
    Path(loan_id): Path<Uuid>,
    query: Result<
        axum::extract::Query<crate::http::support::PageParams>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<AppJson<DocumentList>, AppError> {
    let page = crate::http::support::PageParams::from_query(query)?.page::<Uuid>()?;
    Ok(AppJson(ops::list(&state, &actor, loan_id, page).await?))
}

/// A document's metadata and state.
#[utoipa::path(get, path = "/v1/documents/{id}", tag = "documents", params(("id" = Uuid, Path)),
    responses((status = 200, description = "The document", body = Document)))]
async fn get_document(
    State(state): State<AppState>,
    actor: Actor,
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
    actor: Actor,
    request_id: RequestId,
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
    let document = finish_upload(&state, id, None, &actor, &request_id.0).await?;
    Ok((StatusCode::ACCEPTED, AppJson(document)).into_response())
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
    actor: Actor,
    request_id: RequestId,
    side_effects: SideEffects,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    use crate::crypto::stream::Decryptor;
    use object_store::ObjectStoreExt;

    let mut tx = state.db.begin().await?;
    let row = fetch(&mut tx, id, &actor.read_scope(), false)
        .await?
        .ok_or_else(AppError::not_found)?;
    if actor.masks(&row.owner_subject, row.team.as_deref()) {
        return Err(AppError::forbidden());
    }
    if row.state != DocumentState::Available {
        return Err(AppError::client(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
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
    let store::StoredObject {
        object_key,
        detected_type: detected,
    } = store::object_of(&mut tx, id).await?;
    tx.commit().await?;
    let object_key =
        object_key.ok_or_else(|| anyhow::anyhow!("an available document has no object"))?;
    let key = state.file_key(row.lead_id).await?;
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
    let plain = decrypted(source, Decryptor::new(&key, id));
    let mut response = axum::body::Body::from_stream(plain).into_response();
    let headers = response.headers_mut();
    let content_type = detected.unwrap_or_else(|| "application/octet-stream".into());
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&row.size_bytes.to_string()) {
        headers.insert(header::CONTENT_LENGTH, value);
    }
    if let Ok(value) = HeaderValue::from_str(&crate::documents::content_disposition(&filename)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The plaintext of a stored document as it streams out of the bucket; a chunk that does
/// not authenticate ends the stream with an error (the client sees a cut-off download,
/// never unauthenticated bytes).
fn decrypted(
    source: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    decryptor: crate::crypto::stream::Decryptor,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    use futures::StreamExt;
    futures::stream::unfold(Some((source, decryptor)), |state| async move {
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
    })
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
    actor: Actor,
    request_id: RequestId,
    side_effects: SideEffects,
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
    actor: Actor,
    request_id: RequestId,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    super::ops::soft_delete(&state, &actor, id, &request_id.0).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Review {
    decision: Decision,
    /// Required when rejecting; shown to the borrower.
    reason: Option<String>,
}

/// An agent's review of an `available` document. A rejection puts the document's request
/// back to `rejected` with the reason, and the document stops counting against its link's
/// `max_files`, so the borrower can upload a replacement.
#[utoipa::path(post, path = "/v1/documents/{id}/review", tag = "documents",
    params(("id" = Uuid, Path)), request_body = Review,
    responses(
        (status = 200, description = "Reviewed; the document", body = Document),
        (status = 409, description = "The document is not available", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A rejection without a reason", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn review_document(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(id): Path<Uuid>,
    AppJson(input): AppJson<Review>,
) -> Result<Response, AppError> {
    let document = ops::review_as_written(
        &state,
        &actor,
        id,
        input.decision,
        input.reason.as_deref(),
        &request_id.0,
    )
    .await?;
    Ok(AppJson(document).into_response())
}
