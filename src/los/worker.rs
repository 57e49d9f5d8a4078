//! The LOS side of the saga (docs/architecture.md): a loan that becomes `submitted` is submitted
//! to the LOS (idempotent on our loan id) and its `los_loan_id` stored; milestones — from the
//! signed webhook or from the periodic reconciliation — move the loan through the status
//! machine as the LOS actor. A submission that fails for good flags the loan
//! `needs_attention` and emits `loan.needs_attention`.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit;
use crate::db::outbox;
use crate::events::Event;
use crate::integrations::los::LosError;
use crate::loans::LoanStatus;
use crate::queue::consumer::{Handler, HandlerError, Message};
use crate::state::AppState;

pub use crate::events::{LOS_SUBMITTER as CONSUMER, LOS_SUBMITTER_TOPICS as TOPICS};

pub use crate::loans::milestones::los_actor;

pub struct LosSubmitter {
    state: AppState,
}

impl LosSubmitter {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The loan an event names.
fn loan_of(message: &Message) -> Option<Uuid> {
    message.decoded.as_ref().and_then(Event::loan_id)
}

impl LosSubmitter {
    async fn process(&self, tx: &mut PgConnection, message: &Message) -> Result<(), HandlerError> {
        let (loan, resubmission) = match *message.event()? {
            Event::LoanStatusChanged {
                loan_id,
                new_status: LoanStatus::Submitted,
                ..
            } => (loan_id, false),
            Event::LoanStatusChanged { .. } => return Ok(()),
            Event::LosSubmissionRequested { loan_id } => (loan_id, true),
            _ => {
                return Err(HandlerError::Permanent(anyhow::anyhow!(
                    "not an event the LOS submitter handles"
                )));
            }
        };
        let row = crate::loans::milestones::for_submission(&mut *tx, loan)
            .await
            .map_err(|e| HandlerError::Transient(anyhow::anyhow!("{e}")))?;
        let Some(crate::loans::milestones::SubmissionRow {
            lead_id,
            status,
            los_loan_id,
            loan_type,
            amount,
        }) = row
        else {
            return Err(HandlerError::Permanent(anyhow::anyhow!("no such loan")));
        };
        if (los_loan_id.is_some() && !resubmission)
            || !matches!(status, LoanStatus::Submitted | LoanStatus::Underwriting)
        {
            return Ok(());
        }
        match self.state.los.submit(loan, &loan_type, &amount).await {
            Ok(id) => {
                crate::loans::milestones::set_los_loan_id(&mut *tx, loan, &id)
                    .await
                    .map_err(|e| HandlerError::Transient(anyhow::anyhow!("{e}")))?;
                let actor = los_actor();
                audit::record(
                    &mut *tx,
                    audit::Entry {
                        chain: lead_id,
                        actor: &actor,
                        action: "loan.los_submitted",
                        entity_type: "loan",
                        entity_id: loan,
                        request_id: message.request_id.as_deref(),
                        details: json!({ "los_loan_id": id }),
                    },
                )
                .await
                .map_err(|e| HandlerError::Transient(e.into()))?;
                outbox::enqueue(
                    &mut *tx,
                    &Event::LoanLosSubmitted {
                        loan_id: loan,
                        los_loan_id: id,
                    },
                    None,
                )
                .await
                .map_err(|e| HandlerError::Transient(e.into()))?;
                Ok(())
            }
            Err(LosError::Permanent(reason)) => {
                crate::loans::milestones::needs_attention(tx, loan, reason)
                    .await
                    .map_err(HandlerError::Transient)?;
                Ok(())
            }
            Err(e) => Err(HandlerError::Transient(e.into())),
        }
    }
}

impl Handler for LosSubmitter {
    fn name(&self) -> &str {
        CONSUMER
    }

    fn topics(&self) -> Vec<String> {
        TOPICS.iter().map(|t| (*t).to_owned()).collect()
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(self.process(tx, message))
    }

    fn exhausted<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        message: &'a Message,
        _error: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if let Some(loan) = loan_of(message) {
                crate::loans::milestones::needs_attention(tx, loan, "los_unavailable").await?;
            }
            Ok(())
        })
    }
}

/// One reconciliation round: ask the LOS about every loan in `submitted`/`underwriting` and
/// apply what it says, so a lost webhook cannot leave a loan stale. The number applied.
pub async fn reconcile_once(state: &AppState) -> anyhow::Result<u64> {
    let loans = crate::loans::milestones::awaiting_los(&state.db)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut applied = 0;
    for crate::loans::AtLos {
        id: loan,
        los_loan_id,
    } in loans
    {
        let milestone = match state.los.milestone(&los_loan_id).await {
            Ok(m) => m,
            Err(LosError::CircuitOpen(_)) => break,
            Err(e) => {
                tracing::info!(error = %e, "LOS status unavailable for one loan; next round retries");
                continue;
            }
        };
        let Some(milestone) = crate::loans::milestones::Milestone::parse(&milestone) else {
            continue;
        };
        let mut tx = state.db.begin().await?;
        let outcome = crate::loans::milestones::apply_milestone(
            state,
            &mut tx,
            loan,
            milestone,
            "reconciliation",
            "los-reconciliation",
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        tx.commit().await?;
        if matches!(
            outcome,
            crate::loans::milestones::Outcome::Applied
                | crate::loans::milestones::Outcome::Recorded
        ) {
            applied += 1;
        }
    }
    Ok(applied)
}

pub async fn run_reconciliation(state: AppState) {
    let every = Duration::from_secs(state.settings.los.reconcile_every_secs.max(1));
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match reconcile_once(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(applied = n, "LOS reconciliation applied milestones"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "LOS reconciliation round failed"),
        }
    }
}
