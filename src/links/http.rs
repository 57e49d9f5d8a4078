//! Borrower upload links (docs/security.md, docs/api.md): agents create (the token is shown once), list
//! and revoke them; borrowers read a link's state with the token alone.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ops::active_link;
use super::{LinkList, NOT_SHOWN_AGAIN, NewLink, UploadLink, borrower_actor};
use crate::auth::Actor;
use crate::crypto::field::{self, Location};
use crate::domain::DocumentState;
use crate::error::{AppError, AppJson};
use crate::http::edge::RequestId;
use crate::http::support::{rfc3339, with_location};
use crate::state::AppState;

pub fn agent_routes(state: &AppState) -> OpenApiRouter<AppState> {
    let creating = crate::http::idempotency::layer(
        state,
        OpenApiRouter::new().routes(routes!(create_link, list_links)),
    );
    OpenApiRouter::new()
        .routes(routes!(revoke_link))
        .merge(creating)
}

/// Borrower routes: the upload-link token is the only credential.
pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(link_state))
        .routes(routes!(borrower_upload))
        .routes(routes!(borrower_complete))
        .routes(routes!(not_applicable))
}

/// Create a borrower upload link; the token (and URL) appear in this response only.
#[utoipa::path(post, path = "/v1/loans/{id}/upload-links", tag = "upload links", params(("id" = Uuid, Path)),
    request_body = NewLink,
    responses((status = 201, description = "Created", body = UploadLink)))]
async fn create_link(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(loan_id): Path<Uuid>,
    AppJson(input): AppJson<NewLink>,
) -> Result<Response, AppError> {
    let link = super::ops::create(&state, &actor, loan_id, input, &request_id.0).await?;
    let mut response = with_location(
        StatusCode::CREATED,
        link,
        &format!("/v1/loans/{loan_id}/upload-links"),
    );
    // The token is a capability shown once: a replay of this creation answers without it
    // (the stored copy would outlive a revocation).
    response
        .extensions_mut()
        .insert(crate::http::idempotency::StoreWithout(&[
            ("token", None),
            ("url", Some(NOT_SHOWN_AGAIN)),
        ]));
    Ok(response)
}

/// The loan's upload links (tokens are never shown again).
#[utoipa::path(get, path = "/v1/loans/{id}/upload-links", tag = "upload links",
    params(("id" = Uuid, Path), crate::http::support::PageParams),
    responses((status = 200, description = "Links", body = LinkList)))]
async fn list_links(
    State(state): State<AppState>,
    actor: Actor,
    Path(loan_id): Path<Uuid>,
    query: Result<
        axum::extract::Query<crate::http::support::PageParams>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<AppJson<LinkList>, AppError> {
    let page = crate::http::support::PageParams::from_query(query)?.page::<Uuid>()?;
    Ok(AppJson(
        super::ops::list(&state, &actor, loan_id, page).await?,
    ))
}

/// Revoke a link at once.
#[utoipa::path(delete, path = "/v1/upload-links/{id}", tag = "upload links", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Revoked")))]
async fn revoke_link(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    super::ops::revoke(&state, &actor, id, &request_id.0).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkState {
    state: &'static str,
    expires_at: String,
    agent: String,
    max_files: i32,
    files_accepted: i64,
    /// The largest file accepted, in bytes.
    max_file_bytes: u64,
    accepted_types: Vec<&'static str>,
    requests: Vec<crate::requests::PublicRequest>,
    files: Vec<ReceivedFile>,
}

/// A file the borrower sent through this link, as the borrower may see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceivedFile {
    id: Uuid,
    filename: String,
    doc_type: String,
    document_request_id: Option<Uuid>,
    /// The pipeline's state; an agent's rejection shows as `rejected` with reason
    /// `rejected_by_agent` and the agent's `review_reason`.
    state: String,
    reason: Option<String>,
    review_reason: Option<String>,
    created_at: String,
}

/// A borrower's view of their link. Any token that matches no link is 404 `link_not_found`.
#[utoipa::path(get, path = "/v1/public/upload-links/{token}", tag = "borrowers", params(("token" = String, Path)),
    responses(
        (status = 200, description = "The link", body = LinkState),
        (status = 404, description = "No such link", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired, revoked or full", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn link_state(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<AppJson<LinkState>, AppError> {
    let mut conn = state.db.acquire().await?;
    let link = active_link(&mut conn, &token, false).await?;
    let key = state.file_key(link.lead_id).await?;
    let requests = crate::requests::ops::for_borrower(&mut conn, &key, link.loan_id).await?;
    let rows = crate::documents::ops::of_link(&mut conn, link.id).await?;
    let mut files = Vec::with_capacity(rows.len());
    for row in rows {
        let filename = field::decrypt(
            &key,
            Location {
                table: "documents",
                column: "filename_enc",
                row: row.id,
            },
            &row.filename_enc,
        )
        .map_err(|e| anyhow::anyhow!("decrypting a filename: {e}"))?;
        let rejected_by_agent = row.review_decision.as_deref() == Some("reject");
        files.push(ReceivedFile {
            id: row.id,
            filename: String::from_utf8_lossy(&filename).into_owned(),
            doc_type: row.doc_type,
            document_request_id: row.document_request_id,
            state: if rejected_by_agent {
                DocumentState::Rejected.as_str().to_owned()
            } else {
                row.state.as_str().to_owned()
            },
            reason: if rejected_by_agent {
                Some("rejected_by_agent".into())
            } else {
                row.reason
            },
            review_reason: if rejected_by_agent {
                crate::documents::review_reason(&key, row.id, row.review_reason_enc.as_deref())?
            } else {
                None
            },
            created_at: rfc3339(row.created_at),
        });
    }
    Ok(AppJson(LinkState {
        state: link.state.as_str(),
        expires_at: rfc3339(link.expires_at),
        agent: link.agent,
        max_files: link.max_files,
        files_accepted: link.files_accepted,
        max_file_bytes: state.settings.documents.max_upload_bytes,
        accepted_types: crate::documents::ALLOWED_CONTENT_TYPES.to_vec(),
        requests,
        files,
    }))
}

/// A borrower announces a file; answers the Upload shape with a pre-signed PUT URL.
#[utoipa::path(post, path = "/v1/public/upload-links/{token}/files", tag = "borrowers",
    params(("token" = String, Path)), request_body = crate::documents::NewUpload,
    responses(
        (status = 201, description = "Upload target", body = crate::documents::Upload),
        (status = 404, description = "No such link", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired, revoked or full", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn borrower_upload(
    State(state): State<AppState>,
    request_id: RequestId,
    Path(token): Path<String>,
    AppJson(input): AppJson<crate::documents::NewUpload>,
) -> Result<Response, AppError> {
    let mut tx = state.db.begin().await?;
    let link = active_link(&mut tx, &token, true).await?;
    let content_type = crate::documents::ops::validate_upload(&state, &input)?;
    let actor = borrower_actor(link.id);
    let target = crate::documents::ops::UploadTarget::Link {
        loan_id: link.loan_id,
        lead_id: link.lead_id,
        link_id: link.id,
    };
    let upload = crate::documents::ops::start_upload(
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
    Ok(crate::documents::http::upload_created(upload))
}

/// A borrower's PUT finished: start processing (idempotent).
#[utoipa::path(post, path = "/v1/public/upload-links/{token}/files/{document_id}/complete", tag = "borrowers",
    params(("token" = String, Path), ("document_id" = Uuid, Path)),
    responses((status = 202, description = "Processing", body = crate::documents::Document)))]
async fn borrower_complete(
    State(state): State<AppState>,
    request_id: RequestId,
    Path((token, document)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let mut conn = state.db.acquire().await?;
    let link = active_link(&mut conn, &token, false).await?;
    drop(conn);
    let actor = borrower_actor(link.id);
    // A link reaches only its own documents: another loan's id is simply not found.
    let document = crate::documents::ops::finish_upload(
        &state,
        document,
        Some(link.id),
        &actor,
        &request_id.0,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, AppJson(document)).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotApplicable {
    comment: String,
}

/// The borrower says a requested document does not apply to them, with a comment.
#[utoipa::path(post, path = "/v1/public/upload-links/{token}/requests/{request_id}/not-applicable", tag = "borrowers",
    params(("token" = String, Path), ("request_id" = Uuid, Path)), request_body = NotApplicable,
    responses(
        (status = 200, description = "The request", body = crate::requests::PublicRequest),
        (status = 404, description = "No such link or request", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already received or accepted", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired or revoked link", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn not_applicable(
    State(state): State<AppState>,
    request_id: RequestId,
    Path((token, request)): Path<(String, Uuid)>,
    AppJson(input): AppJson<NotApplicable>,
) -> Result<AppJson<crate::requests::PublicRequest>, AppError> {
    let mut errors = Vec::new();
    crate::requests::check_text("comment", &input.comment, true, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::validation(errors));
    }
    let comment = input.comment.trim();
    let mut tx = state.db.begin().await?;
    let link = active_link(&mut tx, &token, false).await?;
    let borrower = borrower_actor(link.id);
    let answer = crate::requests::ops::mark_not_applicable(
        &state,
        &mut tx,
        &borrower,
        (link.loan_id, link.lead_id),
        (request, comment),
        &request_id.0,
    )
    .await?;
    tx.commit().await?;
    Ok(AppJson(answer))
}
