//! The needs list (docs/api.md "Doc request"): agents ask the borrower for document types,
//! review what arrives, and the borrower may answer "not applicable". Each request keeps a
//! timeline. States: `outstanding` → `received` (a file for it became available) →
//! `accepted` | `rejected` (the borrower sees the reason and uploads a replacement, which
//! makes it `received` again); `outstanding` | `rejected` → `not_applicable` (borrower).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{DocumentRequest, DocumentRequestList, ops};
use crate::auth::Actor;
use crate::domain::DocType;
use crate::error::{AppError, AppJson};
use crate::http::edge::RequestId;
use crate::http::support::with_location;
use crate::state::AppState;

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let creating = crate::http::idempotency::layer(
        state,
        OpenApiRouter::new().routes(routes!(create_request, list_requests)),
    );
    OpenApiRouter::new().merge(creating)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    doc_type: DocType,
    /// What exactly is needed, for the borrower (at most 1000 characters).
    #[serde(default)]
    note: String,
    /// `YYYY-MM-DD`.
    due_date: Option<String>,
}

/// Ask the borrower for a document type.
#[utoipa::path(post, path = "/v1/loans/{id}/document-requests", tag = "documents",
    params(("id" = Uuid, Path)), request_body = NewRequest,
    responses(
        (status = 201, description = "Requested", body = DocumentRequest),
        (status = 422, description = "Invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn create_request(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(loan_id): Path<Uuid>,
    AppJson(input): AppJson<NewRequest>,
) -> Result<Response, AppError> {
    let request = ops::ask(
        &state,
        &actor,
        loan_id,
        input.doc_type,
        (&input.note, input.due_date.as_deref()),
        &request_id.0,
    )
    .await?;
    Ok(with_location(
        StatusCode::CREATED,
        request,
        &format!("/v1/loans/{loan_id}/document-requests"),
    ))
}

/// The loan's needs list with states and timelines.
#[utoipa::path(get, path = "/v1/loans/{id}/document-requests", tag = "documents",
    params(("id" = Uuid, Path), crate::http::support::PageParams),
    responses((status = 200, description = "The needs list, oldest first", body = DocumentRequestList)))]
async fn list_requests(
    State(state): State<AppState>,
    actor: Actor,
    Path(loan_id): Path<Uuid>,
    query: Result<
        axum::extract::Query<crate::http::support::PageParams>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<AppJson<DocumentRequestList>, AppError> {
    let page = crate::http::support::PageParams::from_query(query)?.page::<Uuid>()?;
    Ok(AppJson(ops::list(&state, &actor, loan_id, page).await?))
}
