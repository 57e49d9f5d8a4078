//! The LOS operations an agent starts (the worker's own are in `worker.rs`).

use axum::http::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::audit;
use crate::auth::Actor;
use crate::db::outbox;
use crate::error::{AppError, ErrorCode};
use crate::events::Event;
use crate::loans::LoanStatus;
use crate::state::AppState;

/// Ask for the loan's submission to the LOS again (audited, `los.submission.requested`):
/// only for a loan the caller may change that is submitted or in underwriting (else 409
/// `invalid_state`). The LOS's id for the loan, if it has one.
pub async fn request_resubmission(
    state: &AppState,
    actor: &Actor,
    loan: Uuid,
    request_id: &str,
) -> Result<Option<String>, AppError> {
    let mut tx = state.db.begin().await?;
    let lead_id = crate::loans::ops::writable_loan(&mut tx, loan, actor).await?;
    let crate::loans::StatusAndLosId {
        status,
        los_loan_id,
    } = crate::loans::milestones::status_and_los_id_for_update(&mut tx, loan).await?;
    if !matches!(status, LoanStatus::Submitted | LoanStatus::Underwriting) {
        return Err(AppError::client(
            StatusCode::CONFLICT,
            ErrorCode::InvalidState,
            format!("a {} loan is not submitted to the LOS", status.as_str()),
        ));
    }
    audit::record(
        &mut tx,
        audit::Entry {
            chain: lead_id,
            actor,
            action: "loan.los_submission_requested",
            entity_type: "loan",
            entity_id: loan,
            request_id: Some(request_id),
            details: json!({}),
        },
    )
    .await?;
    outbox::enqueue(
        &mut tx,
        &Event::LosSubmissionRequested { loan_id: loan },
        Some(request_id),
    )
    .await?;
    tx.commit().await?;
    Ok(los_loan_id)
}
