//! Disposal by crypto-shredding (docs/operations/retention.md). The unit is the borrower
//! file — a lead and all its loans — disposed once every loan of it is final and past its
//! rule (or, without a loan, the lead is past its own), and no legal hold is in force.
//!
//! One file is disposed in one transaction that locks the lead, checks again that it is due
//! and not held (a hold being placed locks the same row), blanks the clear-text names and
//! every sealed field of every aggregate, destroys the file's wrapped data key, records the
//! disposal, audits `lead.disposed` with the rule and emits `file.disposed`, which makes
//! every process drop its cached copy of the key. After the commit, the disposal is
//! appended to the ledger outside the database and the file's objects are deleted from both
//! buckets; a crash in between is finished by the next round.

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::ledger::{self, LedgerEntry};
use super::store::{self, DueFile, Periods};
use crate::audit;
use crate::auth::Actor;
use crate::db::outbox;
use crate::domain::rfc3339;
use crate::events::Event;
use crate::state::AppState;

/// The name `worker.consumers` places the disposal runner by.
pub const RUNNER: &str = "retention";

/// Files disposed per batch (each its own transaction) before the batch's objects go.
const BATCH: i64 = 200;

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundSummary {
    /// Borrower files disposed whole.
    pub disposed: u64,
    /// Rejected documents and notifications disposed under their own rules.
    pub documents: u64,
    pub notifications: u64,
    /// Files that were due but could not be disposed this round (logged by id).
    pub failed: u64,
}

/// Why a file is disposed: due under a rule now, or replayed from the ledger by a restore.
#[derive(Debug, Clone)]
pub enum Reason {
    Due,
    Replay(LedgerEntry),
}

/// Run rounds every `retention.interval_secs` until the task is dropped.
pub async fn run(state: AppState) {
    let every = Duration::from_secs(state.settings.retention.interval_secs.max(1));
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match run_round(&state, OffsetDateTime::now_utc()).await {
            Ok(Some(summary)) if summary != RoundSummary::default() => {
                tracing::info!(
                    files = summary.disposed,
                    documents = summary.documents,
                    notifications = summary.notifications,
                    failed = summary.failed,
                    "disposal round"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "disposal round failed"),
        }
    }
}

/// One round as of `now`: finish what an earlier round left, then dispose every due file.
/// `None` when another replica's round is running. Refused unless `retention.enabled`.
pub async fn run_round(
    state: &AppState,
    now: OffsetDateTime,
) -> anyhow::Result<Option<RoundSummary>> {
    anyhow::ensure!(
        state.settings.retention.enabled,
        "disposal is off (retention.enabled = false); the report is the dry run"
    );
    let mut lock = state.db.acquire().await?;
    if !store::try_lock_round(&mut lock).await? {
        return Ok(None);
    }
    let result = round(state, now).await;
    if store::unlock_round(&mut lock).await.is_err() {
        // Closing the session releases the lock.
        drop(lock.detach());
    }
    result.map(Some)
}

async fn round(state: &AppState, now: OffsetDateTime) -> anyhow::Result<RoundSummary> {
    let periods = periods(state);
    let mut summary = RoundSummary::default();
    finish(state).await?;
    loop {
        let due = {
            let mut conn = state.db.acquire().await?;
            store::due_files(&mut conn, periods, now, None, BATCH).await?
        };
        let mut disposed_now = 0;
        for file in &due {
            match dispose(state, file.lead_id, now, &Reason::Due).await {
                Ok(true) => disposed_now += 1,
                Ok(false) => {}
                Err(e) => {
                    summary.failed += 1;
                    tracing::warn!(file_id = %file.lead_id, error = %format!("{e:#}"), "a due file was not disposed");
                }
            }
        }
        summary.disposed += disposed_now;
        finish(state).await?;
        // A batch that disposed nothing would come back the same: stop until next round.
        if due.len() < BATCH as usize || disposed_now == 0 {
            break;
        }
    }
    dispose_records(state, now, &mut summary).await?;
    Ok(summary)
}

/// The record-level rules: rejected documents and notifications of files still live.
async fn dispose_records(
    state: &AppState,
    now: OffsetDateTime,
    summary: &mut RoundSummary,
) -> anyhow::Result<()> {
    let r = &state.settings.retention;
    let days = |d: u32| i32::try_from(d).unwrap_or(i32::MAX);
    loop {
        let n = crate::documents::lifecycle::dispose_rejected(
            state,
            now,
            days(r.documents_rejected_days),
            BATCH,
        )
        .await?;
        summary.documents += n;
        if n < BATCH as u64 {
            break;
        }
    }
    summary.notifications +=
        crate::notifications::ops::dispose_sent(&state.db, now, days(r.notifications_days)).await?;
    Ok(())
}

fn periods(state: &AppState) -> Periods {
    let r = &state.settings.retention;
    let days = |d: u32| i32::try_from(d).unwrap_or(i32::MAX);
    Periods {
        leads_without_loan: days(r.leads_without_loan_days),
        loans_closed: days(r.loans_closed_days),
        loans_denied: days(r.loans_denied_days),
        loans_withdrawn: days(r.loans_withdrawn_days),
        credit_reports: days(r.credit_reports_days),
    }
}

/// The rule that made `file` due, and when: whichever of its periods ended last.
pub fn rule_of(file: &DueFile) -> (&'static str, OffsetDateTime) {
    let main = if file.without_loan {
        "leads_without_loan_days"
    } else {
        match file.binding_status.as_deref() {
            Some("closed") => "loans_closed_days",
            Some("denied") => "loans_denied_days",
            _ => "loans_withdrawn_days",
        }
    };
    match file.credit_due {
        Some(credit) if credit > file.main_due => ("credit_reports_days", credit),
        _ => (main, file.main_due),
    }
}

/// Dispose of the borrower file `lead` at `at`; false when it is not due (any more), held,
/// gone or disposed already. A replay disposes whatever the rules and holds say: the
/// disposal happened before the backup was restored.
pub async fn dispose(
    state: &AppState,
    lead: Uuid,
    at: OffsetDateTime,
    reason: &Reason,
) -> anyhow::Result<bool> {
    let mut tx = state.db.begin().await?;
    if !crate::leads::ops::lock_for_disposal(&mut tx, lead).await? {
        return Ok(false);
    }
    let (rule, due_at, replayed) = match reason {
        Reason::Due => {
            let due = store::due_files(&mut tx, periods(state), at, Some(lead), 1).await?;
            let Some(file) = due.first() else {
                return Ok(false);
            };
            let (rule, due_at) = rule_of(file);
            (rule.to_owned(), due_at, false)
        }
        Reason::Replay(entry) => (entry.rule.clone(), entry.disposed_at, true),
    };
    crate::leads::ops::blank_for_disposal(&mut tx, lead, at).await?;
    crate::loans::ops::blank_for_disposal(&mut tx, lead).await?;
    crate::documents::lifecycle::blank_for_disposal(&mut tx, lead).await?;
    crate::requests::ops::blank_for_disposal(&mut tx, lead).await?;
    crate::links::ops::blank_for_disposal(&mut tx, lead, at).await?;
    crate::notifications::ops::blank_for_disposal(&mut tx, lead).await?;
    store::blank_holds(&mut tx, lead).await?;
    state.keys.destroy_file_key(&mut tx, lead, at).await?;
    store::record_disposal(&mut tx, lead, &rule, due_at, at, replayed).await?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: lead,
            actor: &Actor::system(RUNNER, "Retention"),
            action: "lead.disposed",
            entity_type: "lead",
            entity_id: lead,
            request_id: None,
            details: json!({ "rule": rule, "due_at": rfc3339(due_at), "replayed": replayed }),
        },
    )
    .await?;
    outbox::enqueue(&mut tx, &Event::FileDisposed { lead_id: lead }, None).await?;
    tx.commit().await?;
    state.keys.forget(lead);
    Ok(true)
}

/// Append unledgered disposals to the outside ledger, then delete the objects of every
/// disposed file whose objects are not all gone yet.
pub async fn finish(state: &AppState) -> anyhow::Result<()> {
    let mut conn = state.db.acquire().await?;
    let unledgered = store::unledgered(&mut conn).await?;
    if !unledgered.is_empty() {
        let path = state
            .settings
            .retention
            .ledger_path
            .clone()
            .ok_or_else(|| anyhow::anyhow!("retention.ledger_path is not set"))?;
        let entries: Vec<LedgerEntry> = unledgered
            .iter()
            .map(|d| LedgerEntry {
                file_id: d.lead_id,
                disposed_at: d.disposed_at,
                rule: d.rule.clone(),
            })
            .collect();
        tokio::task::spawn_blocking(move || ledger::append(&path, &entries)).await??;
        let ids: Vec<Uuid> = unledgered.iter().map(|d| d.lead_id).collect();
        store::mark_ledgered(&mut conn, &ids).await?;
    }
    for lead in store::objects_pending(&mut conn).await? {
        crate::documents::lifecycle::delete_file_objects(state, lead).await?;
        store::mark_objects_deleted(&mut conn, lead).await?;
    }
    Ok(())
}

/// Drop cached data keys of files disposed by any process, for as long as the task runs.
pub async fn forget_disposed_keys(state: AppState) {
    let keys = state.keys.clone();
    let on_connect = {
        let keys = keys.clone();
        move || keys.forget_all()
    };
    let on_message = move |payload: &[u8]| {
        let decoded = serde_json::from_slice(payload)
            .ok()
            .and_then(|p| Event::decode(Event::FILE_DISPOSED, crate::events::EVENT_VERSION, &p));
        if let Some(Event::FileDisposed { lead_id }) = decoded {
            keys.forget(lead_id);
        }
    };
    crate::queue::broadcast::listen(state.into(), Event::FILE_DISPOSED, on_connect, on_message)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap() + time::Duration::days(days)
    }

    fn file(without_loan: bool, status: Option<&str>, main: i64, credit: Option<i64>) -> DueFile {
        DueFile {
            lead_id: Uuid::nil(),
            without_loan,
            binding_status: status.map(str::to_owned),
            main_due: at(main),
            credit_due: credit.map(at),
        }
    }

    #[test]
    fn the_rule_is_the_period_that_ended_last() {
        assert_eq!(
            rule_of(&file(true, None, 10, None)),
            ("leads_without_loan_days", at(10))
        );
        assert_eq!(
            rule_of(&file(true, None, 10, Some(20))),
            ("credit_reports_days", at(20))
        );
        assert_eq!(
            rule_of(&file(false, Some("closed"), 30, Some(20))),
            ("loans_closed_days", at(30))
        );
        assert_eq!(
            rule_of(&file(false, Some("denied"), 30, Some(30))),
            ("loans_denied_days", at(30)),
            "a tie names the loan's rule"
        );
        assert_eq!(
            rule_of(&file(false, Some("withdrawn"), 5, None)),
            ("loans_withdrawn_days", at(5))
        );
    }
}
