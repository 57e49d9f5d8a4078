//! Credit pulls (docs/architecture.md, docs/api.md): requested with a consent of the pull's type (FCRA
//! permissible purpose) and complete subject data, performed asynchronously by the credit
//! worker against the bureau, summarised in columns, the full report encrypted and shown
//! only on an audited read.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ops::follow_up;
use super::store;
use super::{ConsentInput, CreditPull, CreditPullList, FollowUp, PullType, report_at};
use crate::actor::SideEffects;
use crate::audit;
use crate::auth::Actor;
use crate::crypto::field::{self};
use crate::error::{AppError, AppJson, ErrorCode};
use crate::http::edge::RequestId;
use crate::http::support::with_location;
use crate::state::AppState;

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let creating = crate::http::idempotency::layer(
        state,
        OpenApiRouter::new()
            .routes(routes!(request_pull, list_pulls))
            .routes(routes!(reissue))
            .routes(routes!(upgrade)),
    );
    OpenApiRouter::new()
        .routes(routes!(get_pull))
        .routes(routes!(get_report))
        .routes(routes!(latest_pull))
        .merge(creating)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    pull_type: PullType,
    /// Without a consent of this pull's type the request is 422 `consent_required`.
    consent: Option<ConsentInput>,
}

/// 202 with the pull and where to follow it: the bureau answers later.
fn accepted(pull: CreditPull) -> Response {
    let location = format!("/v1/credit-reports/{}", pull.id);
    with_location(StatusCode::ACCEPTED, pull, &location)
}

/// Request a credit pull for a lead; it runs asynchronously.
#[utoipa::path(post, path = "/v1/leads/{id}/credit-reports", tag = "credit", params(("id" = Uuid, Path)),
    request_body = PullRequest,
    responses(
        (status = 202, description = "Queued", body = CreditPull),
        (status = 422, description = "`consent_required`, `subject_incomplete` or invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn request_pull(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(lead_id): Path<Uuid>,
    AppJson(input): AppJson<PullRequest>,
) -> Result<Response, AppError> {
    let pull = super::ops::request(
        &state,
        &actor,
        lead_id,
        input.pull_type,
        input.consent,
        &request_id.0,
    )
    .await?;
    Ok(accepted(pull))
}

/// The lead's pulls, newest first.
#[utoipa::path(get, path = "/v1/leads/{id}/credit-reports", tag = "credit",
    params(("id" = Uuid, Path), crate::http::support::PageParams),
    responses((status = 200, description = "Pulls", body = CreditPullList)))]
async fn list_pulls(
    State(state): State<AppState>,
    actor: Actor,
    Path(lead_id): Path<Uuid>,
    query: Result<
        axum::extract::Query<crate::http::support::PageParams>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<AppJson<CreditPullList>, AppError> {
    let page = crate::http::support::PageParams::from_query(query)?.page::<Uuid>()?;
    Ok(AppJson(
        super::ops::list(&state, &actor, lead_id, page).await?,
    ))
}

/// The brief's route: the lead's latest pull. It never starts one.
#[utoipa::path(get, path = "/v1/credit-report/{leadId}", tag = "credit", params(("leadId" = Uuid, Path)),
    responses(
        (status = 200, description = "The latest pull", body = CreditPull),
        (status = 404, description = "No such lead, or no pull yet", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn latest_pull(
    State(state): State<AppState>,
    actor: Actor,
    Path(lead_id): Path<Uuid>,
) -> Result<AppJson<CreditPull>, AppError> {
    let row = store::latest(&state.db, lead_id, &actor.read_scope()).await?;
    Ok(AppJson(CreditPull::view(
        row.ok_or_else(AppError::not_found)?,
        &actor,
    )))
}

/// A pull's state and summary.
#[utoipa::path(get, path = "/v1/credit-reports/{id}", tag = "credit", params(("id" = Uuid, Path)),
    responses((status = 200, description = "The pull", body = CreditPull)))]
async fn get_pull(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<AppJson<CreditPull>, AppError> {
    let mut conn = state.db.acquire().await?;
    let row = store::fetch(&mut conn, id, &actor.read_scope())
        .await?
        .ok_or_else(AppError::not_found)?;
    Ok(AppJson(CreditPull::view(row, &actor)))
}

/// The full bureau report of a completed pull (audited; a recent authentication is required).
#[utoipa::path(get, path = "/v1/credit-reports/{id}/report", tag = "credit", params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The bureau's report", body = serde_json::Value),
        (status = 409, description = "Not completed", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn get_report(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    side_effects: SideEffects,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let mut tx = state.db.begin().await?;
    let row = store::fetch(&mut tx, id, &actor.read_scope())
        .await?
        .ok_or_else(AppError::not_found)?;
    if actor.masks(&row.owner_subject, row.team.as_deref()) {
        return Err(AppError::forbidden());
    }
    side_effects.require()?;
    actor.require_recent_auth(state.settings.auth.step_up_max_age_secs)?;
    let sealed = store::report_enc(&mut tx, id).await?;
    let Some(sealed) = sealed else {
        return Err(AppError::client(
            StatusCode::CONFLICT,
            ErrorCode::InvalidState,
            format!(
                "the pull is {}; the report exists once it is completed",
                row.status.as_str()
            ),
        ));
    };
    let key = state.file_key(row.lead_id).await?;
    let plain = field::decrypt(&key, report_at(id), &sealed)
        .map_err(|e| anyhow::anyhow!("decrypting a credit report: {e}"))?;
    let report: serde_json::Value = serde_json::from_slice(&plain)
        .map_err(|e| anyhow::anyhow!("a stored credit report is not JSON: {e}"))?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: row.lead_id,
            actor: &actor,
            action: "credit_report.viewed",
            entity_type: "credit_report",
            entity_id: id,
            request_id: Some(&request_id.0),
            details: json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(AppJson(report).into_response())
}

/// Ask the bureau for the same report again (no new inquiry).
#[utoipa::path(post, path = "/v1/credit-reports/{id}/reissue", tag = "credit", params(("id" = Uuid, Path)),
    request_body = FollowUp, responses((status = 202, description = "Queued", body = CreditPull)))]
async fn reissue(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let body = optional_body(&body)?;
    let pull = follow_up(&state, &actor, &request_id.0, id, body, false).await?;
    Ok(accepted(pull))
}

/// Turn a soft pull into a hard one; needs a hard-pull consent.
#[utoipa::path(post, path = "/v1/credit-reports/{id}/upgrade", tag = "credit", params(("id" = Uuid, Path)),
    request_body = FollowUp, responses((status = 202, description = "Queued", body = CreditPull)))]
async fn upgrade(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let body = optional_body(&body)?;
    let pull = follow_up(&state, &actor, &request_id.0, id, body, true).await?;
    Ok(accepted(pull))
}

/// An optional JSON body: none at all, or a valid `FollowUp`.
fn optional_body(body: &[u8]) -> Result<Option<FollowUp>, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|_| crate::http::support::malformed("the body must be JSON: {\"consent\": {…}}"))
}
