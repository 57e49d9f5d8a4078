//! The credit operations the other aggregates call: queueing a pull (with its consent,
//! audit row and `credit.requested` event) in the caller's transaction.

use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::store::{self, QueuedPull};
use super::{Consent, PullType, ip_at};
use crate::audit;
use crate::auth::Actor;
use crate::crypto::field;
use crate::db::outbox;
use crate::error::{AppError, ErrorCode};
use crate::events::Event;
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
