//! Loan applications (docs/api.md): create for a visible lead, read, the dashboard (status
//! counts and a page of loans from one snapshot), status transitions with `If-Match`, and
//! the status history. Each handler extracts, calls one operation (`ops`) and renders.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{HistoryList, Loan, LoanList, LoanStatus, NewLoan, TransitionRequest, ops};
use crate::auth::Actor;
use crate::db::Page;
use crate::error::{AppError, AppJson};
use crate::http::edge::RequestId;
use crate::http::support::{PageParams, etag, if_match, malformed};
use crate::state::AppState;

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let creating =
        crate::http::idempotency::layer(state, OpenApiRouter::new().routes(routes!(create_loan)));
    OpenApiRouter::new()
        .routes(routes!(dashboard))
        .routes(routes!(get_loan))
        .routes(routes!(transition))
        .routes(routes!(history))
        .merge(creating)
}

fn with_etag(status: StatusCode, loan: Loan) -> Response {
    let version = loan.version;
    let id = loan.id;
    let mut response = (status, AppJson(loan)).into_response();
    response.headers_mut().insert(header::ETAG, etag(version));
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&format!("/v1/loans/{id}"))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Create a loan application (status `draft`) for a lead the caller may change.
#[utoipa::path(post, path = "/v1/loans", tag = "loans", request_body = NewLoan,
    params(("Idempotency-Key" = String, Header, description = "Required")),
    responses(
        (status = 201, description = "Created", body = Loan),
        (status = 422, description = "Invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn create_loan(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    AppJson(input): AppJson<NewLoan>,
) -> Result<Response, AppError> {
    let loan = ops::create(&state, &actor, input, &request_id.0).await?;
    Ok(with_etag(StatusCode::CREATED, loan))
}

/// One loan.
#[utoipa::path(get, path = "/v1/loans/{id}", tag = "loans", params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The loan", body = Loan),
        (status = 404, description = "No such loan (or not yours)", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn get_loan(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    Ok(with_etag(
        StatusCode::OK,
        ops::get(&state, &actor, id).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DashboardParams {
    status: Option<LoanStatus>,
    /// 1–200, default 50.
    limit: Option<i64>,
    cursor: Option<String>,
}

/// The dashboard: status counts and a page of loans, read in one snapshot.
#[utoipa::path(get, path = "/v1/loans", tag = "loans", params(DashboardParams),
    responses((status = 200, description = "Counts and a page of loans", body = LoanList)))]
async fn dashboard(
    State(state): State<AppState>,
    actor: Actor,
    query: Result<Query<DashboardParams>, axum::extract::rejection::QueryRejection>,
) -> Result<AppJson<LoanList>, AppError> {
    let Query(params) = query.map_err(|_| malformed("a query parameter is not valid"))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(malformed("`limit` must be between 1 and 200"));
    }
    let after = params
        .cursor
        .as_deref()
        .map(Uuid::parse_str)
        .transpose()
        .map_err(|_| malformed("`cursor` is not valid"))?;
    let page = Page { limit, after };
    Ok(AppJson(
        ops::dashboard(&state, &actor, params.status, page).await?,
    ))
}

/// Move a loan through its status machine; `If-Match` required. 409 for a move the
/// machine never allows, then 403 for a move the caller's role may not make.
#[utoipa::path(post, path = "/v1/loans/{id}/status", tag = "loans",
    params(("id" = Uuid, Path), ("If-Match" = String, Header, description = "The ETag you last read (428 without it, 412 when the loan changed since)")),
    request_body = TransitionRequest,
    responses(
        (status = 200, description = "Moved", body = Loan),
        (status = 409, description = "The machine does not allow it", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn transition(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    AppJson(request): AppJson<TransitionRequest>,
) -> Result<Response, AppError> {
    let loan = ops::transition(
        &state,
        &actor,
        id,
        if_match(&headers),
        &request,
        &request_id.0,
    )
    .await?;
    Ok(with_etag(StatusCode::OK, loan))
}

/// The loan's status history, oldest first.
#[utoipa::path(get, path = "/v1/loans/{id}/history", tag = "loans",
    params(("id" = Uuid, Path), PageParams),
    responses((status = 200, description = "Transitions", body = HistoryList)))]
async fn history(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    query: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<AppJson<HistoryList>, AppError> {
    let page = PageParams::from_query(query)?.page::<i64>()?;
    Ok(AppJson(ops::history(&state, &actor, id, page).await?))
}
