//! The credit operations: queueing a pull (with its consent, audit row and
//! `credit.requested` event) in the caller's transaction, which the other aggregates call;
//! and requesting, following up and listing pulls, which the JSON API and the console share.

use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::store::{self, QueuedPull};
use super::{
    Consent, ConsentInput, ConsentMethod, CreditPull, CreditPullList, FollowUp, PullState,
    PullType, ip_at,
};
use crate::audit;
use crate::auth::{Actor, ReadScope};
use crate::crypto::field;
use crate::db::{Page, outbox};
use crate::error::{AppError, ErrorCode};
use crate::events::Event;
use crate::leads::ops::writable_lead;
use crate::state::AppState;

/// A pull to queue: for which lead, of which type, on which consent; `new`, or a
/// `reissue` / `upgrade` of the pull `based_on`.
#[derive(Clone, Copy)]
pub struct Pull<'a> {
    pub lead_id: Uuid,
    pub pull_type: PullType,
    pub consent: &'a Consent,
    pub kind: &'a str,
    pub based_on: Option<Uuid>,
}

/// Record a queued pull with its consent, audit row and `credit.requested` event (in `tx`).
/// The subject must be complete: SSN, date of birth and address.
pub async fn queue_pull(
    state: &AppState,
    tx: &mut PgConnection,
    actor: &Actor,
    pull: &Pull<'_>,
    request_id: &str,
) -> Result<Uuid, AppError> {
    let Pull {
        lead_id,
        pull_type,
        consent,
        kind,
        based_on,
    } = *pull;
    let complete = crate::leads::ops::subject_complete(tx, lead_id).await?;
    if complete != Some(true) {
        return Err(AppError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::SubjectIncomplete,
            "a credit pull needs the borrower's SSN, date of birth and address",
        ));
    }
    let id = Uuid::now_v7();
    let ip_enc = match consent.ip {
        Some(ip) => {
            let key = state.file_key(lead_id).await?;
            Some(field::encrypt(&key, ip_at(id), ip.to_string().as_bytes()))
        }
        None => None,
    };
    store::insert_queued(
        tx,
        &QueuedPull {
            id,
            lead_id,
            pull_type,
            consent,
            ip_enc: ip_enc.as_deref(),
            requested_by: &actor.subject,
            kind,
            based_on,
        },
    )
    .await?;
    audit::record(
        &mut *tx,
        audit::Entry {
            chain: lead_id,
            actor,
            action: "credit_report.requested",
            entity_type: "credit_report",
            entity_id: id,
            request_id: Some(request_id),
            details: json!({ "pull_type": pull_type.as_str(), "kind": kind, "consent_method": consent.method.as_str(), "consent_text_version": consent.text_version }),
        },
    )
    .await?;
    outbox::enqueue(
        &mut *tx,
        &Event::CreditRequested {
            credit_report_id: id,
            lead_id,
        },
        Some(request_id),
    )
    .await?;
    Ok(id)
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

/// The pull just queued, as the caller sees it. Read outside the caller's scope: the
/// caller wrote it a moment ago, and only the masking is theirs.
async fn accepted(state: &AppState, actor: &Actor, id: Uuid) -> Result<CreditPull, AppError> {
    let mut conn = state.db.acquire().await?;
    let row = store::fetch(&mut conn, id, &ReadScope::All)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the pull just written is missing"))?;
    Ok(CreditPull::view(row, actor))
}

/// Request a new pull for a lead the caller may change; the worker performs it later. A
/// pull without a consent of its type has no permissible purpose (FCRA): 422
/// `consent_required`, checked after the lead's scope so a hidden lead stays 404.
pub async fn request(
    state: &AppState,
    actor: &Actor,
    lead_id: Uuid,
    pull_type: PullType,
    consent: Option<ConsentInput>,
    request_id: &str,
) -> Result<CreditPull, AppError> {
    let mut tx = state.db.begin().await?;
    writable_lead(&mut tx, lead_id, actor).await?;
    let consent = consent
        .ok_or_else(|| consent_required(pull_type))?
        .validate("consent", OffsetDateTime::now_utc())
        .map_err(AppError::validation)?;
    let id = queue_pull(
        state,
        &mut tx,
        actor,
        &Pull {
            lead_id,
            pull_type,
            consent: &consent,
            kind: "new",
            based_on: None,
        },
        request_id,
    )
    .await?;
    tx.commit().await?;
    accepted(state, actor, id).await
}

/// A page of the lead's pulls, newest first; 404 for a lead the caller cannot see.
pub async fn list(
    state: &AppState,
    actor: &Actor,
    lead_id: Uuid,
    page: Page<Uuid>,
) -> Result<CreditPullList, AppError> {
    let mut conn = state.db.acquire().await?;
    crate::leads::ops::visible_lead(&mut conn, lead_id, actor).await?;
    let mut rows = store::lead_page(&mut conn, lead_id, page.after, page.limit + 1).await?;
    let next_cursor = crate::db::next_page(&mut rows, page.limit, |r| r.id.to_string());
    Ok(CreditPullList {
        items: rows
            .into_iter()
            .map(|r| CreditPull::view(r, actor))
            .collect(),
        next_cursor,
    })
}

/// A follow-up of a completed pull: a reissue (`upgrade` false) asks the bureau for the
/// same report again and rests on the original pull's consent; an upgrade turns a soft
/// pull into a hard one, a new inquiry, so it needs a hard-pull consent in `body`.
pub async fn follow_up(
    state: &AppState,
    actor: &Actor,
    request_id: &str,
    id: Uuid,
    body: Option<FollowUp>,
    upgrade: bool,
) -> Result<CreditPull, AppError> {
    let mut tx = state.db.begin().await?;
    let row = store::fetch(&mut tx, id, &actor.read_scope())
        .await?
        .ok_or_else(AppError::not_found)?;
    writable_lead(&mut tx, row.lead_id, actor).await?;
    if row.status != PullState::Completed || row.bureau_report_id.is_none() {
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
            "written" => ConsentMethod::Written,
            "electronic" => ConsentMethod::Electronic,
            _ => ConsentMethod::Verbal,
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
        state,
        &mut tx,
        actor,
        &Pull {
            lead_id: row.lead_id,
            pull_type,
            consent: &consent,
            kind,
            based_on: Some(id),
        },
        request_id,
    )
    .await?;
    tx.commit().await?;
    accepted(state, actor, new).await
}
