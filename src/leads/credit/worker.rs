//! The credit worker (docs/architecture.md): consumes `credit.requested`, decrypts the subject
//! only in memory, calls the bureau through its circuit breaker, and records `completed`
//! (summary in columns, the full report encrypted) or `failed` with the reason. Transient
//! failures retry through the queue's backoff tiers (1 s … 30 s); a short Retry-After is
//! honoured in place. A pull that fails for good marks the lead's open loans
//! `needs_attention` and emits `loan.needs_attention`.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::store;
use crate::audit;
use crate::auth::Actor;
use crate::crypto::field::{self, Location};
use crate::db::outbox;
use crate::events::Event;
use crate::integrations::bureau::{BureauError, Kind, Report, Subject};
use crate::queue::consumer::{Handler, HandlerError, Message};
use crate::state::AppState;

pub use crate::events::{CREDIT_WORKER as CONSUMER, CREDIT_WORKER_TOPICS as TOPICS};

/// The longest Retry-After waited for in place; longer ones go back to the queue.
const WAIT_IN_PLACE: Duration = Duration::from_secs(5);

/// Flags the lead's open loans when its pull failed for good, in the pull's transaction,
/// with their `loan.needs_attention` events. The loans aggregate's rule: loans depends on
/// leads, so the composition root hands it in (`app.rs`: `loans::ops::flag_open_loans`).
pub type FlagOpenLoans =
    for<'a> fn(&'a mut PgConnection, Uuid, &'a str) -> BoxFuture<'a, anyhow::Result<()>>;

pub struct CreditWorker {
    state: AppState,
    flag_open_loans: FlagOpenLoans,
}

impl CreditWorker {
    pub fn new(state: AppState, flag_open_loans: FlagOpenLoans) -> Self {
        Self {
            state,
            flag_open_loans,
        }
    }
}

fn worker_actor() -> Actor {
    Actor::system("credit-worker", "Credit worker")
}

fn transient(e: impl Into<anyhow::Error>) -> HandlerError {
    HandlerError::Transient(e.into())
}

/// The pull a requested-pull event names.
fn pull_of(message: &Message) -> Option<Uuid> {
    match message.decoded {
        Some(Event::CreditRequested {
            credit_report_id, ..
        }) => Some(credit_report_id),
        _ => None,
    }
}

/// The lead's subject in the clear, for the length of one call.
async fn subject(
    state: &AppState,
    tx: &mut PgConnection,
    lead: Uuid,
) -> Result<Subject, HandlerError> {
    let row = crate::leads::store::credit_subject(&mut *tx, lead)
        .await
        .map_err(transient)?;
    let key = state
        .keys
        .file_key(&state.db, lead)
        .await
        .map_err(HandlerError::of_key)?;
    let open = |column: &'static str, sealed: Option<Vec<u8>>| -> Result<String, HandlerError> {
        let sealed =
            sealed.ok_or_else(|| HandlerError::Permanent(anyhow::anyhow!("subject_incomplete")))?;
        let plain = field::decrypt(
            &key,
            Location {
                table: "leads",
                column,
                row: lead,
            },
            &sealed,
        )
        .map_err(|e| HandlerError::Permanent(anyhow::anyhow!("decrypting leads.{column}: {e}")))?;
        String::from_utf8(plain)
            .map_err(|_| HandlerError::Permanent(anyhow::anyhow!("leads.{column} is not UTF-8")))
    };
    let digits = open("ssn_enc", row.ssn_enc)?;
    let ssn = if digits.len() == 9 {
        format!("{}-{}-{}", &digits[..3], &digits[3..5], &digits[5..])
    } else {
        digits
    };
    let address: Value = serde_json::from_str(&open("address_enc", row.address_enc)?)
        .map_err(|_| HandlerError::Permanent(anyhow::anyhow!("the stored address is not JSON")))?;
    Ok(Subject {
        first_name: row.first_name,
        last_name: row.last_name,
        ssn,
        date_of_birth: open("date_of_birth_enc", row.date_of_birth_enc)?,
        address,
    })
}

/// A pull that failed for good: its state, the audit row, `credit.failed`, and every open
/// loan of the lead marked `needs_attention` with `loan.needs_attention`.
async fn fail_pull(
    tx: &mut PgConnection,
    (id, lead): (Uuid, Uuid),
    reason: &str,
    flag_open_loans: FlagOpenLoans,
) -> anyhow::Result<()> {
    if !store::fail(&mut *tx, id, reason).await? {
        return Ok(());
    }
    let actor = worker_actor();
    audit::record(
        &mut *tx,
        audit::Entry {
            chain: lead,
            actor: &actor,
            action: "credit_report.failed",
            entity_type: "credit_report",
            entity_id: id,
            request_id: None,
            details: json!({ "reason": reason }),
        },
    )
    .await?;
    outbox::enqueue(
        &mut *tx,
        &Event::CreditFailed {
            credit_report_id: id,
            lead_id: lead,
            reason: reason.to_string(),
        },
        None,
    )
    .await?;
    let attention = format!("credit_pull_failed: {reason}");
    flag_open_loans(tx, lead, &attention).await
}

impl CreditWorker {
    async fn process(&self, tx: &mut PgConnection, id: Uuid) -> Result<(), HandlerError> {
        let state = &self.state;
        let row = store::for_work(&mut *tx, id).await.map_err(transient)?;
        let Some(store::WorkRow {
            lead_id: lead,
            status,
            pull_type,
            request_kind: kind,
            based_on,
        }) = row
        else {
            return Err(HandlerError::Permanent(anyhow::anyhow!(
                "no such credit pull"
            )));
        };
        if !status.is_open() {
            return Ok(()); // decided already: a redelivery
        }
        let base_report: Option<String> = match based_on {
            Some(base) => store::bureau_report_id(&mut *tx, base)
                .await
                .map_err(transient)?,
            None => None,
        };
        let kind = match (kind.as_str(), base_report.as_deref()) {
            ("reissue", Some(r)) => Kind::Reissue(r),
            ("upgrade", Some(r)) => Kind::Upgrade(r),
            _ => Kind::New,
        };
        let subject = match subject(state, tx, lead).await {
            Ok(s) => s,
            Err(HandlerError::Permanent(_)) => {
                fail_pull(tx, (id, lead), "subject_incomplete", self.flag_open_loans)
                    .await
                    .map_err(transient)?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut outcome = state.bureau.pull(kind, id, &pull_type, &subject).await;
        if let Err(BureauError::Transient {
            retry_after: Some(wait),
            ..
        }) = &outcome
            && *wait <= WAIT_IN_PLACE
        {
            tokio::time::sleep(*wait).await;
            outcome = state.bureau.pull(kind, id, &pull_type, &subject).await;
        }
        drop(subject);
        store::count_attempt(&mut *tx, id)
            .await
            .map_err(transient)?;
        let report = match outcome {
            Ok(report) => report,
            Err(BureauError::Permanent(reason)) => {
                fail_pull(tx, (id, lead), reason, self.flag_open_loans)
                    .await
                    .map_err(transient)?;
                return Ok(());
            }
            Err(e @ (BureauError::Transient { .. } | BureauError::CircuitOpen(_))) => {
                return Err(retry_later(e));
            }
        };
        self.complete_pull(tx, (id, lead), &report).await
    }

    /// Store the bureau's report sealed, with its audit row and event, in `tx`.
    async fn complete_pull(
        &self,
        tx: &mut PgConnection,
        (id, lead): (Uuid, Uuid),
        report: &Report,
    ) -> Result<(), HandlerError> {
        let state = &self.state;
        let key = state
            .keys
            .file_key(&state.db, lead)
            .await
            .map_err(HandlerError::of_key)?;
        let sealed = field::encrypt(
            &key,
            crate::leads::credit::report_at(id),
            &serde_json::to_vec(&report.raw).map_err(transient)?,
        );
        store::complete(
            &mut *tx,
            id,
            report.score,
            &report.bureau,
            &report.report_id,
            &sealed,
        )
        .await
        .map_err(transient)?;
        let actor = worker_actor();
        audit::record(
            &mut *tx,
            audit::Entry {
                chain: lead,
                actor: &actor,
                action: "credit_report.completed",
                entity_type: "credit_report",
                entity_id: id,
                request_id: None,
                details: json!({ "bureau": report.bureau }),
            },
        )
        .await
        .map_err(transient)?;
        outbox::enqueue(
            &mut *tx,
            &Event::CreditCompleted {
                credit_report_id: id,
                lead_id: lead,
            },
            None,
        )
        .await
        .map_err(transient)?;
        Ok(())
    }
}

/// A bureau outage as a retry, after the wait the bureau (or the open circuit) names.
fn retry_later(e: BureauError) -> HandlerError {
    let wait = match &e {
        BureauError::Transient { retry_after, .. } => *retry_after,
        BureauError::CircuitOpen(retry_in) => Some(*retry_in),
        BureauError::Permanent(_) => None,
    };
    let error = anyhow::Error::new(e);
    HandlerError::Transient(match wait {
        Some(wait) => error.context(crate::queue::consumer::RetryAfter(wait)),
        None => error,
    })
}

impl Handler for CreditWorker {
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
        Box::pin(async move {
            let Event::CreditRequested {
                credit_report_id: id,
                ..
            } = *message.event()?
            else {
                return Err(HandlerError::Permanent(anyhow::anyhow!(
                    "not a requested-pull event"
                )));
            };
            self.process(tx, id).await
        })
    }

    fn exhausted<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        message: &'a Message,
        _error: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let Some(id) = pull_of(message) else {
                return Ok(());
            };
            let lead = store::lead_of(&mut *tx, id).await?;
            if let Some(lead) = lead {
                fail_pull(tx, (id, lead), "bureau_unavailable", self.flag_open_loans).await?;
            }
            Ok(())
        })
    }
}
