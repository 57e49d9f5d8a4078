//! The LOS routes (docs/api.md): the signed milestone webhook, and the agent's re-drive of
//! a loan's LOS submission.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Actor;
use crate::error::{AppError, AppJson, ErrorCode, FieldError};
use crate::http::edge::RequestId;
use crate::integrations::webhook_signature::{self as signature, HeaderError};
use crate::loans::milestones::{Milestone, Outcome, apply_milestone};
use crate::los::store;
use crate::state::AppState;

pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(webhook))
}

pub fn agent_routes(state: &AppState) -> OpenApiRouter<AppState> {
    crate::http::idempotency::layer(state, OpenApiRouter::new().routes(routes!(resubmit)))
}

fn unauthorized(code: ErrorCode, detail: &str) -> AppError {
    AppError::client(StatusCode::UNAUTHORIZED, code, detail.to_owned())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MilestoneEvent {
    event_id: String,
    #[serde(rename = "type")]
    kind: String,
    los_loan_id: String,
    loan_id: Option<Uuid>,
    /// underwriting | approved | closed | denied | withdrawn | suspended
    milestone: String,
    occurred_at: String,
}

/// LOS milestone events, signed with `Loanfolio-Signature`.
#[utoipa::path(post, path = "/v1/webhooks/los", tag = "integrations", request_body = MilestoneEvent,
    responses(
        (status = 204, description = "Applied, or already seen"),
        (status = 202, description = "Recorded, not applied (unknown loan or a milestone the status machine does not allow)"),
        (status = 400, description = "Malformed JSON", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "`invalid_signature` or `stale_timestamp`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid event", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn webhook(
    State(state): State<AppState>,
    request_id: RequestId,
    request: axum::extract::Request,
) -> Result<Response, AppError> {
    let body = signed_body(&state, request).await?;
    let event: MilestoneEvent = serde_json::from_slice(&body).map_err(|_| {
        AppError::client(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            "the body is not a milestone event".to_owned(),
        )
    })?;
    let (milestone, occurred_at) = validate_event(&event)?;

    let mut tx = state.db.begin().await?;
    // The event id is claimed first: concurrent deliveries of one event wait here for the
    // first to commit, then find it taken.
    let fresh = store::claim_event(
        &mut tx,
        &event.event_id,
        &event.los_loan_id,
        milestone.as_str(),
        occurred_at,
    )
    .await?;
    if !fresh {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let loan = crate::loans::milestones::by_los_loan_id(&mut tx, &event.los_loan_id, event.loan_id)
        .await?;
    let outcome = match loan {
        Some(loan) => {
            apply_milestone(&state, &mut tx, loan, milestone, "webhook", &request_id.0).await?
        }
        None => Outcome::UnknownLoan,
    };
    store::set_outcome(&mut tx, &event.event_id, outcome.as_str(), loan).await?;
    tx.commit().await?;
    Ok(match outcome {
        Outcome::Applied | Outcome::Recorded | Outcome::AlreadyThere => StatusCode::NO_CONTENT,
        Outcome::NotAllowed | Outcome::UnknownLoan => StatusCode::ACCEPTED,
    }
    .into_response())
}

/// The body of a webhook whose signature holds. The header first: a forged or stale request
/// is refused before one byte of its body is read, whatever its size (docs/api.md;
/// integrations::webhook_signature).
async fn signed_body(
    state: &AppState,
    request: axum::extract::Request,
) -> Result<axum::body::Bytes, AppError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let header = request
        .headers()
        .get("loanfolio-signature")
        .ok_or(HeaderError::Malformed)
        .and_then(|v| signature::parse(v.as_bytes(), now))
        .map_err(|e| match e {
            HeaderError::Malformed => unauthorized(
                ErrorCode::InvalidSignature,
                "missing or malformed Loanfolio-Signature",
            ),
            HeaderError::Stale => unauthorized(
                ErrorCode::StaleTimestamp,
                "the signature's timestamp is more than 300 s away from now",
            ),
        })?;
    let limit = state.settings.los.webhook_body_limit_bytes;
    let too_large = || {
        AppError::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("webhook bodies may be at most {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| too_large())?;
    let keys = state
        .webhook_keys
        .current()
        .map_err(|e| anyhow::anyhow!("LOS webhook secrets: {e}"))?;
    if !keys.verify(&header, &body) {
        return Err(unauthorized(
            ErrorCode::InvalidSignature,
            "the signature does not match",
        ));
    }
    Ok(body)
}

/// The event's milestone and time, or 422 naming every field that is wrong.
fn validate_event(event: &MilestoneEvent) -> Result<(Milestone, Option<OffsetDateTime>), AppError> {
    let mut errors = Vec::new();
    let mut check = |ok: bool, field: &str, message: &str| {
        if !ok {
            errors.push(FieldError {
                field: field.into(),
                message: message.into(),
            });
        }
    };
    check(
        !event.event_id.is_empty() && event.event_id.len() <= 200,
        "event_id",
        "1–200 characters",
    );
    check(
        event.kind == "loan.milestone",
        "type",
        "must be loan.milestone",
    );
    check(
        !event.los_loan_id.is_empty() && event.los_loan_id.len() <= 200,
        "los_loan_id",
        "1–200 characters",
    );
    let milestone = Milestone::parse(&event.milestone);
    check(milestone.is_some(), "milestone", "unknown milestone");
    let occurred_at = OffsetDateTime::parse(&event.occurred_at, &Rfc3339).ok();
    check(
        occurred_at.is_some(),
        "occurred_at",
        "must be an RFC 3339 time",
    );
    match milestone.filter(|_| errors.is_empty()) {
        Some(milestone) => Ok((milestone, occurred_at)),
        None => Err(AppError::validation(errors)),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Submission {
    loan_id: Uuid,
    los_loan_id: Option<String>,
    /// `queued`: the LOS submitter will (re)submit the loan.
    submission: &'static str,
}

/// (Re)submit a loan to the LOS; normally automatic when the loan becomes `submitted`.
#[utoipa::path(post, path = "/v1/loans/{id}/los-submission", tag = "loans", params(("id" = Uuid, Path)),
    responses(
        (status = 202, description = "Queued", body = Submission),
        (status = 409, description = "The loan is not submitted or in underwriting", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn resubmit(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(loan): Path<Uuid>,
) -> Result<Response, AppError> {
    let los_loan_id = super::ops::request_resubmission(&state, &actor, loan, &request_id.0).await?;
    Ok((
        StatusCode::ACCEPTED,
        AppJson(Submission {
            loan_id: loan,
            los_loan_id,
            submission: "queued",
        }),
    )
        .into_response())
}
