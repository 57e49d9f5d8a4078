//! Legal holds and the retention report (docs/api.md). Each handler extracts, calls one
//! operation and renders.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{LegalHold, LegalHoldList, NewLegalHold, RetentionReport, ops};
use crate::actor::SideEffects;
use crate::auth::Actor;
use crate::error::{AppError, AppJson};
use crate::http::edge::RequestId;
use crate::http::support::{PageParams, with_location};
use crate::state::AppState;

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let creating =
        crate::http::idempotency::layer(state, OpenApiRouter::new().routes(routes!(place_hold)));
    OpenApiRouter::new()
        .routes(routes!(list_holds))
        .routes(routes!(lift_hold))
        .routes(routes!(retention_report))
        .routes(routes!(export_loan))
        .merge(creating)
}

/// Place a legal hold on a lead or a loan (compliance): the borrower file is never disposed
/// while it is in force. Audited `legal_hold.placed` on the lead or loan.
#[utoipa::path(post, path = "/v1/legal-holds", tag = "retention", request_body = NewLegalHold,
    params(("Idempotency-Key" = String, Header, description = "Required")),
    responses(
        (status = 201, description = "Placed", body = LegalHold),
        (status = 403, description = "Not compliance", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lead or loan", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason, or too long", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn place_hold(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    AppJson(input): AppJson<NewLegalHold>,
) -> Result<Response, AppError> {
    let hold = ops::place(&state, &actor, &input, &request_id.0).await?;
    let location = format!("/v1/legal-holds/{}", hold.id);
    Ok(with_location(StatusCode::CREATED, hold, &location))
}

/// The holds in force, newest first (compliance and admin; an admin sees reasons masked).
#[utoipa::path(get, path = "/v1/legal-holds", tag = "retention", params(PageParams),
    responses(
        (status = 200, description = "Holds in force", body = LegalHoldList),
        (status = 403, description = "Not compliance or admin", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn list_holds(
    State(state): State<AppState>,
    actor: Actor,
    query: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<AppJson<LegalHoldList>, AppError> {
    let page = PageParams::from_query(query)?.page::<String>()?;
    Ok(AppJson(ops::list(&state, &actor, page).await?))
}

/// Lift a hold (compliance); audited `legal_hold.lifted` on the lead or loan.
#[utoipa::path(delete, path = "/v1/legal-holds/{id}", tag = "retention", params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Lifted"),
        (status = 404, description = "No such hold in force", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn lift_hold(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    ops::lift(&state, &actor, id, &request_id.0).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What each retention rule would dispose of now and within 30 days, and what legal holds
/// keep (compliance and admin). A dry run: counts only.
#[utoipa::path(get, path = "/v1/retention/report", tag = "retention",
    responses(
        (status = 200, description = "The report", body = RetentionReport),
        (status = 403, description = "Not compliance or admin", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn retention_report(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<AppJson<RetentionReport>, AppError> {
    Ok(AppJson(ops::report(&state, &actor).await?))
}

/// The borrower file of a loan as a zip: `file.json` (schema:
/// docs/schemas/borrower-file.schema.json) and every available document, decrypted. Write
/// scope and a recent sign-in (step-up); audited `loan.exported`.
#[utoipa::path(get, path = "/v1/loans/{id}/export", tag = "retention", params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The zip", content_type = "application/zip"),
        (status = 401, description = "A recent sign-in is needed (`step_up_required`, with `reauth_url`)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Read-only access to the loan, or no CSRF proof on a cookie request", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such loan", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn export_loan(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    side_effects: SideEffects,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let export = super::export::prepare(&state, &actor, id, side_effects, &request_id.0).await?;
    Ok(super::export::response(state, export))
}
