//! Credit pulls (docs/architecture.md, docs/api.md): requested with a consent of the pull's type (FCRA
//! permissible purpose) and complete subject data, performed asynchronously by the credit
//! worker against the bureau, summarised in columns, the full report encrypted and shown
//! only on an audited read.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ops::queue_pull;
use super::report_at;
use super::store;
use crate::actor::SideEffects;
use crate::audit;
use crate::auth::{Actor, ReadScope};
use crate::crypto::field::{self};
use crate::error::{AppError, AppJson, ErrorCode};
use crate::http::edge::RequestId;
use crate::http::support::{rfc3339, with_location};
use crate::leads::credit::{Consent, ConsentInput, PullType};
use crate::leads::ops::writable_lead;
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreditPull {
    id: Uuid,
    lead_id: Uuid,
    pull_type: String,
    /// `new`, `reissue` or `upgrade`.
    request_kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    based_on: Option<Uuid>,
    status: String,
    score: Option<i32>,
    bureau: Option<String>,
    bureau_report_id: Option<String>,
    pulled_at: Option<String>,
    failure_reason: Option<String>,
    created_at: String,
}

impl CreditPull {
    /// The API shape; the score is borrower data an admin does not see (docs/security.md).
    fn view(r: store::PullRow, actor: &Actor) -> Self {
        let masked = actor.masks(&r.owner_subject, r.team.as_deref());
        CreditPull {
            id: r.id,
            lead_id: r.lead_id,
            pull_type: r.pull_type,
            request_kind: r.request_kind,
            based_on: r.based_on,
            status: r.status.as_str().to_owned(),
            score: if masked { None } else { r.score },
            bureau: r.bureau,
            bureau_report_id: r.bureau_report_id,
            pulled_at: r.pulled_at.map(rfc3339),
            failure_reason: r.failure_reason,
            created_at: rfc3339(r.created_at),
        }
    }
}

fn consent_required(pull_type: PullType) -> AppError {
    AppError::client(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::ConsentRequired,
        format!(
            "a {} pull needs the borrower's consent for a {} pull (FCRA permissible purpose)",
            pull_type.as_str(),
            pull_type.as_str()
        ),
    )
}

async fn accepted(state: &AppState, actor: &Actor, id: Uuid) -> Result<Response, AppError> {
    let mut conn = state.db.acquire().await?;
    let row = store::fetch(&mut conn, id, &ReadScope::All)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the pull just written is missing"))?;
    Ok(with_location(
        StatusCode::ACCEPTED,
        CreditPull::view(row, actor),
        &format!("/v1/credit-reports/{id}"),
    ))
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
    let mut tx = state.db.begin().await?;
    writable_lead(&mut tx, lead_id, &actor).await?;
    let consent = input
        .consent
        .ok_or_else(|| consent_required(input.pull_type))?
        .validate("consent", OffsetDateTime::now_utc())
        .map_err(AppError::validation)?;
    let id = queue_pull(
        &state,
        &mut tx,
        &actor,
        &crate::leads::credit::ops::Pull {
            lead_id,
            pull_type: input.pull_type,
            consent: &consent,
            kind: "new",
            based_on: None,
        },
        &request_id.0,
    )
    .await?;
    tx.commit().await?;
    accepted(&state, &actor, id).await
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreditPullList {
    items: Vec<CreditPull>,
    next_cursor: Option<String>,
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
    let mut conn = state.db.acquire().await?;
    crate::leads::ops::visible_lead(&mut conn, lead_id, &actor).await?;
    let mut rows = store::lead_page(&mut conn, lead_id, page.after, page.limit + 1).await?;
    let next_cursor = crate::http::support::next_page(&mut rows, page.limit, |r| r.id.to_string());
    Ok(AppJson(CreditPullList {
        items: rows
            .into_iter()
            .map(|r| CreditPull::view(r, &actor))
            .collect(),
        next_cursor,
    }))
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowUp {
    /// Required for an upgrade: a hard-pull consent.
    consent: Option<ConsentInput>,
}

/// Ask the bureau for the same report again (no new inquiry).
#[utoipa::path(post, path = "/v1/credit-reports/{id}/reissue", tag = "credit", params(("id" = Uuid, Path)),
    request_body = FollowUp, responses((status = 202, description = "Queued", body = CreditPull)))]
async fn reissue(
    state: State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    follow_up(state, actor, request_id, id, optional_body(&body)?, false).await
}

/// Turn a soft pull into a hard one; needs a hard-pull consent.
#[utoipa::path(post, path = "/v1/credit-reports/{id}/upgrade", tag = "credit", params(("id" = Uuid, Path)),
    request_body = FollowUp, responses((status = 202, description = "Queued", body = CreditPull)))]
async fn upgrade(
    state: State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    follow_up(state, actor, request_id, id, optional_body(&body)?, true).await
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

async fn follow_up(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    id: Uuid,
    body: Option<FollowUp>,
    upgrade: bool,
) -> Result<Response, AppError> {
    let mut tx = state.db.begin().await?;
    let row = store::fetch(&mut tx, id, &actor.read_scope())
        .await?
        .ok_or_else(AppError::not_found)?;
    writable_lead(&mut tx, row.lead_id, &actor).await?;
    if row.status != super::PullState::Completed || row.bureau_report_id.is_none() {
        return Err(AppError::client(
            StatusCode::CONFLICT,
            ErrorCode::InvalidState,
            "only a completed pull can be reissued or upgraded",
        ));
    }
    let (pull_type, consent, kind) = if upgrade {
        if row.pull_type != "soft" {
            return Err(AppError::client(
                StatusCode::CONFLICT,
                ErrorCode::InvalidState,
                "only a soft pull can be upgraded",
            ));
        }
        let consent = body
            .and_then(|b| b.consent)
            .ok_or_else(|| consent_required(PullType::Hard))?
            .validate("consent", OffsetDateTime::now_utc())
            .map_err(AppError::validation)?;
        (PullType::Hard, consent, "upgrade")
    } else {
        // A reissue rests on the original pull's consent.
        let store::ConsentRecord {
            consent_obtained_at: obtained_at,
            consent_method: method,
            consent_text_version: text_version,
        } = store::consent_of(&mut tx, id).await?;
        let method = match method.as_str() {
            "written" => crate::leads::credit::ConsentMethod::Written,
            "electronic" => crate::leads::credit::ConsentMethod::Electronic,
            _ => crate::leads::credit::ConsentMethod::Verbal,
        };
        let pull_type = if row.pull_type == "hard" {
            PullType::Hard
        } else {
            PullType::Soft
        };
        (
            pull_type,
            Consent {
                obtained_at,
                method,
                text_version,
                ip: None,
            },
            "reissue",
        )
    };
    let new = queue_pull(
        &state,
        &mut tx,
        &actor,
        &crate::leads::credit::ops::Pull {
            lead_id: row.lead_id,
            pull_type,
            consent: &consent,
            kind,
            based_on: Some(id),
        },
        &request_id.0,
    )
    .await?;
    tx.commit().await?;
    accepted(&state, &actor, new).await
}
