//! A loan as the LOS moves it (docs/integrations/los.md): milestones — from the signed
//! webhook or the periodic reconciliation — applied through the status machine as the LOS
//! actor or recorded on the loan; the LOS loan id stored on submission; a submission that
//! fails for good flags the loan `needs_attention`. The LOS integration itself is `crate::los`.

use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::store;
pub use super::store::SubmissionRow;
use super::{LoanStatus, Mover, may_move};
use crate::audit;
use crate::auth::Actor;
use crate::db::outbox;
use crate::error::AppError;
use crate::events::Event;
use crate::state::AppState;

/// The LOS, as audit rows and histories name it.
pub fn los_actor() -> Actor {
    Actor::system("los", "LOS").without_roles()
}

/// What became of a milestone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The loan moved through the status machine.
    Applied,
    /// Recorded on the loan and in its history without a status change (approved, suspended).
    Recorded,
    /// The loan is already where the milestone puts it.
    AlreadyThere,
    /// The status machine does not allow it from the loan's state: kept for review.
    NotAllowed,
    UnknownLoan,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Recorded => "recorded",
            Outcome::AlreadyThere => "already_there",
            Outcome::NotAllowed => "not_allowed",
            Outcome::UnknownLoan => "unknown_loan",
        }
    }
}

/// A milestone the LOS reports (docs/integrations/los.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    Underwriting,
    Approved,
    Closed,
    Denied,
    Withdrawn,
    Suspended,
}

impl Milestone {
    pub const ALL: [Milestone; 6] = [
        Milestone::Underwriting,
        Milestone::Approved,
        Milestone::Closed,
        Milestone::Denied,
        Milestone::Withdrawn,
        Milestone::Suspended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Milestone::Underwriting => "underwriting",
            Milestone::Approved => "approved",
            Milestone::Closed => "closed",
            Milestone::Denied => "denied",
            Milestone::Withdrawn => "withdrawn",
            Milestone::Suspended => "suspended",
        }
    }

    /// The milestone the LOS's text names, if it is one we know.
    pub fn parse(text: &str) -> Option<Milestone> {
        Milestone::ALL.into_iter().find(|m| m.as_str() == text)
    }

    /// The loan status it moves the loan to; `None` for one only recorded on the loan
    /// (approved, suspended).
    fn status(self) -> Option<LoanStatus> {
        match self {
            Milestone::Underwriting => Some(LoanStatus::Underwriting),
            Milestone::Closed => Some(LoanStatus::Closed),
            Milestone::Denied => Some(LoanStatus::Denied),
            Milestone::Withdrawn => Some(LoanStatus::Withdrawn),
            Milestone::Approved | Milestone::Suspended => None,
        }
    }
}

/// Apply an LOS milestone to a loan (in `tx`, with the loan row locked).
pub async fn apply_milestone(
    state: &AppState,
    tx: &mut PgConnection,
    loan: Uuid,
    milestone: Milestone,
    source: &str,
    request_id: &str,
) -> Result<Outcome, AppError> {
    let row = store::lead_and_status_for_update(&mut *tx, loan).await?;
    let Some(store::LeadAndStatus {
        lead_id,
        status: from,
    }) = row
    else {
        return Ok(Outcome::UnknownLoan);
    };
    let actor = los_actor();
    let key = state.file_key(lead_id).await?;
    let reason = format!("LOS milestone {} ({source})", milestone.as_str());
    match milestone.status() {
        Some(to) if to == from => Ok(Outcome::AlreadyThere),
        Some(to) if !may_move(Mover::Los, from, to) => Ok(Outcome::NotAllowed),
        Some(to) => {
            let moving = super::ops::Moving {
                id: loan,
                lead_id,
                status: from,
            };
            super::ops::apply_transition(
                tx,
                &key,
                &moving,
                crate::loans::ops::Step {
                    to,
                    reason: Some(&reason),
                },
                &actor,
                request_id,
            )
            .await?;
            store::set_los_milestone(&mut *tx, loan, milestone.as_str()).await?;
            Ok(Outcome::Applied)
        }
        None => {
            if !store::change_los_milestone(&mut *tx, loan, milestone.as_str()).await? {
                return Ok(Outcome::AlreadyThere);
            }
            let reason_enc = crate::crypto::field::encrypt(
                &key,
                crate::crypto::field::Location {
                    table: "loan_status_history",
                    column: "reason_enc",
                    row: loan,
                },
                reason.as_bytes(),
            );
            store::insert_history(
                &mut *tx,
                loan,
                from,
                from,
                &actor.subject,
                Some(&reason_enc),
            )
            .await?;
            audit::record(
                &mut *tx,
                audit::Entry {
                    chain: lead_id,
                    actor: &actor,
                    action: "loan.los_milestone",
                    entity_type: "loan",
                    entity_id: loan,
                    request_id: Some(request_id),
                    details: json!({ "milestone": milestone.as_str(), "source": source }),
                },
            )
            .await?;
            Ok(Outcome::Recorded)
        }
    }
}

/// Flag a loan whose LOS submission failed for good.
pub async fn needs_attention(
    tx: &mut PgConnection,
    loan: Uuid,
    reason: &str,
) -> anyhow::Result<()> {
    let reason = format!("los_submission_failed: {reason}");
    store::flag_needs_attention(&mut *tx, loan, &reason).await?;
    outbox::enqueue(
        &mut *tx,
        &Event::LoanNeedsAttention {
            loan_id: loan,
            reason,
        },
        None,
    )
    .await?;
    Ok(())
}

/// What a submission needs of the loan, the row locked.
pub async fn for_submission(
    tx: &mut PgConnection,
    loan: Uuid,
) -> Result<Option<SubmissionRow>, AppError> {
    Ok(store::for_submission(tx, loan).await?)
}

/// Store the LOS's id for the loan; a `los_…` attention flag goes with it.
pub async fn set_los_loan_id(
    tx: &mut PgConnection,
    loan: Uuid,
    los_loan_id: &str,
) -> Result<(), AppError> {
    Ok(store::set_los_loan_id(tx, loan, los_loan_id).await?)
}

/// Loans the LOS is working on, least recently updated first: (loan, LOS loan id).
pub async fn awaiting_los(db: &PgPool) -> Result<Vec<super::AtLos>, AppError> {
    Ok(store::awaiting_los(db, 500).await?)
}

/// The loan a webhook's LOS loan id names (and, when given, our id agrees).
pub async fn by_los_loan_id(
    tx: &mut PgConnection,
    los_loan_id: &str,
    loan: Option<Uuid>,
) -> Result<Option<Uuid>, AppError> {
    Ok(store::by_los_loan_id(tx, los_loan_id, loan).await?)
}

/// The loan's status and LOS id, the row locked (a re-drive of its submission).
pub async fn status_and_los_id_for_update(
    tx: &mut PgConnection,
    loan: Uuid,
) -> Result<super::StatusAndLosId, AppError> {
    Ok(store::status_and_los_id_for_update(tx, loan).await?)
}
