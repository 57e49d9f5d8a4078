//! The LOS side of the saga (docs/architecture.md): a loan that becomes `submitted` is submitted
//! to the LOS (idempotent on our loan id) and its `los_loan_id` stored; milestones — from the
//! signed webhook or from the periodic reconciliation — move the loan through the status
//! machine as the LOS actor. A submission that fails for good flags the loan
//! `needs_attention` and emits `loan.needs_attention`.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit;
use crate::auth::Actor;
use crate::db::outbox;
use crate::error::AppError;
use crate::integrations::los::LosError;
use crate::loans::{LoanStatus, Mover, may_move};
use crate::queue::consumer::{Handler, HandlerError, Message};
use crate::state::AppState;

pub use crate::events::{LOS_SUBMITTER as CONSUMER, LOS_SUBMITTER_TOPICS as TOPICS};

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

pub const MILESTONES: [&str; 6] = [
    "underwriting",
    "approved",
    "closed",
    "denied",
    "withdrawn",
    "suspended",
];

fn status_of(milestone: &str) -> Option<LoanStatus> {
    match milestone {
        "underwriting" => Some(LoanStatus::Underwriting),
        "closed" => Some(LoanStatus::Closed),
        "denied" => Some(LoanStatus::Denied),
        "withdrawn" => Some(LoanStatus::Withdrawn),
        _ => None,
    }
}

fn parse_status(s: &str) -> Option<LoanStatus> {
    LoanStatus::ALL.into_iter().find(|st| st.as_str() == s)
}

/// Apply an LOS milestone to a loan (in `tx`, with the loan row locked).
pub async fn apply_milestone(
    state: &AppState,
    tx: &mut PgConnection,
    loan: Uuid,
    milestone: &str,
    source: &str,
    request_id: &str,
) -> Result<Outcome, AppError> {
    // language=PostgreSQL
    let row: Option<(Uuid, String)> =
        sqlx::query_as("select lead_id, status from loans where id = $1 for update")
            .bind(loan)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((lead_id, status)) = row else {
        return Ok(Outcome::UnknownLoan);
    };
    let from =
        parse_status(&status).ok_or_else(|| anyhow::anyhow!("unknown loan status {status}"))?;
    let actor = los_actor();
    let key = state
        .keys
        .file_key(&state.db, lead_id)
        .await
        .map_err(crate::error::kms_unavailable)?;
    let reason = format!("LOS milestone {milestone} ({source})");
    match status_of(milestone) {
        Some(to) if to == from => Ok(Outcome::AlreadyThere),
        Some(to) if !may_move(Mover::Los, from, to) => Ok(Outcome::NotAllowed),
        Some(to) => {
            let moving = crate::loans::ops::Moving {
                id: loan,
                lead_id,
                status: from,
            };
            crate::loans::ops::apply_transition(
                tx,
                &key,
                &moving,
                to,
                &actor,
                Some(&reason),
                request_id,
            )
            .await?;
            // language=PostgreSQL
            sqlx::query("update loans set los_milestone = $2 where id = $1")
                .bind(loan)
                .bind(milestone)
                .execute(&mut *tx)
                .await?;
            Ok(Outcome::Applied)
        }
        None => {
            // language=PostgreSQL
            let changed = sqlx::query(
                "update loans set los_milestone = $2, updated_at = now()
                  where id = $1 and los_milestone is distinct from $2",
            )
            .bind(loan)
            .bind(milestone)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
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
            // language=PostgreSQL
            sqlx::query(
                "insert into loan_status_history (loan_id, from_status, to_status, actor_subject, reason_enc)
                 values ($1, $2, $2, $3, $4)",
            )
            .bind(loan)
            .bind(from.as_str())
            .bind(&actor.subject)
            .bind(reason_enc)
            .execute(&mut *tx)
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
                    details: json!({ "milestone": milestone, "source": source }),
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
    // language=PostgreSQL
    sqlx::query(
        "update loans set needs_attention_reason = $2, needs_attention_since = now(), updated_at = now() where id = $1",
    )
    .bind(loan)
    .bind(&reason)
    .execute(&mut *tx)
    .await?;
    outbox::enqueue(
        &mut *tx,
        "loan.needs_attention",
        json!({ "loanId": loan, "reason": reason }),
        None,
    )
    .await?;
    Ok(())
}

pub struct LosSubmitter {
    state: AppState,
}

impl LosSubmitter {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn loan_of(message: &Message) -> Option<Uuid> {
    message
        .payload
        .get("loanId")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

impl LosSubmitter {
    async fn process(&self, tx: &mut PgConnection, message: &Message) -> Result<(), HandlerError> {
        if message.topic == "loan.status.changed"
            && message.payload.get("newStatus").and_then(Value::as_str) != Some("submitted")
        {
            return Ok(());
        }
        let loan = loan_of(message)
            .ok_or_else(|| HandlerError::Permanent(anyhow::anyhow!("no loanId")))?;
        // language=PostgreSQL
        let row: Option<(Uuid, String, Option<String>, String, String)> = sqlx::query_as(
            "select lead_id, status, los_loan_id, loan_type, amount::text from loans where id = $1 for update",
        )
        .bind(loan)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| HandlerError::Transient(e.into()))?;
        let Some((lead_id, status, los_loan_id, loan_type, amount)) = row else {
            return Err(HandlerError::Permanent(anyhow::anyhow!("no such loan")));
        };
        let resubmission = message.topic == "los.submission.requested";
        if (los_loan_id.is_some() && !resubmission)
            || !matches!(status.as_str(), "submitted" | "underwriting")
        {
            return Ok(());
        }
        match self.state.los.submit(loan, &loan_type, &amount).await {
            Ok(id) => {
                // language=PostgreSQL
                sqlx::query(
                    "update loans set los_loan_id = $2, updated_at = now(),
                            needs_attention_reason = case when needs_attention_reason like 'los_%' then null else needs_attention_reason end,
                            needs_attention_since = case when needs_attention_reason like 'los_%' then null else needs_attention_since end
                      where id = $1",
                )
                .bind(loan)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(|e| HandlerError::Transient(e.into()))?;
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
                    "loan.los_submitted",
                    json!({ "loanId": loan, "losLoanId": id }),
                    None,
                )
                .await
                .map_err(|e| HandlerError::Transient(e.into()))?;
                Ok(())
            }
            Err(LosError::Permanent(reason)) => {
                needs_attention(tx, loan, reason)
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
                needs_attention(tx, loan, "los_unavailable").await?;
            }
            Ok(())
        })
    }
}

/// One reconciliation round: ask the LOS about every loan in `submitted`/`underwriting` and
/// apply what it says, so a lost webhook cannot leave a loan stale. The number applied.
pub async fn reconcile_once(state: &AppState) -> anyhow::Result<u64> {
    // language=PostgreSQL
    let loans: Vec<(Uuid, String)> = sqlx::query_as(
        "select id, los_loan_id from loans
          where status in ('submitted', 'underwriting') and los_loan_id is not null
          order by updated_at limit 500",
    )
    .fetch_all(&state.db)
    .await?;
    let mut applied = 0;
    for (loan, los_loan_id) in loans {
        let milestone = match state.los.milestone(&los_loan_id).await {
            Ok(m) => m,
            Err(LosError::CircuitOpen(_)) => break,
            Err(e) => {
                tracing::info!(error = %e, "LOS status unavailable for one loan; next round retries");
                continue;
            }
        };
        if !MILESTONES.contains(&milestone.as_str()) {
            continue;
        }
        let mut tx = state.db.begin().await?;
        let outcome = apply_milestone(
            state,
            &mut tx,
            loan,
            &milestone,
            "reconciliation",
            "los-reconciliation",
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        tx.commit().await?;
        if matches!(outcome, Outcome::Applied | Outcome::Recorded) {
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
