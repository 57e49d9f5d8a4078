//! Disposal by crypto-shredding (docs/operations/retention.md). The unit is the borrower
//! file — a lead and all its loans — disposed once every loan of it is final and past its
//! rule, the lead past its own (from its last activity) and its credit reports past theirs,
//! and no legal hold is in force.
//!
//! One file is disposed in one transaction that locks the lead, checks again that it is due
//! and not held (a hold being placed locks the same row), appends the disposal to the
//! ledger outside the database, blanks the clear-text names and every sealed field of every
//! aggregate, destroys the file's wrapped data key, records the disposal, audits
//! `lead.disposed` with the rule and emits `file.disposed`, which makes every process drop
//! its cached copy of the key. After the commit the file's objects are deleted from both
//! buckets — again on later rounds while an upload URL of the file may still be used.

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
const BATCH: i64 = 500;

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundSummary {
    /// Borrower files disposed whole.
    pub disposed: u64,
    /// Rejected documents and notifications disposed under their own rules.
    pub documents: u64,
    pub notifications: u64,
    /// Files that were due but could not be disposed, or whose objects could not all be
    /// deleted, this round (logged by id; tried again next round).
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
    use sqlx::{ConnectOptions, Connection};

    anyhow::ensure!(
        state.settings.retention.enabled,
        "disposal is off (retention.enabled = false); the report is the dry run"
    );
    // The round's lock lives on a connection of its own, outside the pool: whatever ends
    // the round (an error, a panic, a cancelled task) closes it, and the lock goes with it.
    let mut lock = state.db.connect_options().connect().await?;
    if !store::try_lock_round(&mut lock).await? {
        return Ok(None);
    }
    let result = round(state, now).await;
    let _ = lock.close().await;
    result.map(Some)
}

async fn round(state: &AppState, now: OffsetDateTime) -> anyhow::Result<RoundSummary> {
    let periods = periods(state);
    let mut summary = RoundSummary::default();
    let mut skip = Vec::new();
    summary.failed += finish(state, now).await;
    loop {
        let due = {
            let mut conn = state.db.acquire().await?;
            store::due_files(&mut conn, periods, now, &skip, BATCH).await?
        };
        for file in &due {
            match dispose(state, file.lead_id, now, &Reason::Due).await {
                Ok(true) => summary.disposed += 1,
                Ok(false) => {}
                Err(e) => {
                    // Left for the next round; this one goes on without it.
                    summary.failed += 1;
                    skip.push(file.lead_id);
                    tracing::warn!(file_id = %file.lead_id, error = %format!("{e:#}"), "a due file was not disposed");
                }
            }
        }
        summary.failed += finish(state, now).await;
        if due.len() < BATCH as usize {
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
        if n < BATCH.unsigned_abs() {
            break;
        }
    }
    summary.notifications +=
        crate::notifications::ops::dispose_sent(&state.db, now, days(r.notifications_days), 1_000)
            .await?;
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

/// The rule that made `file` due, and when: whichever of its periods ended last (a tie goes
/// to the loans, then to the lead).
pub fn rule_of(file: &DueFile) -> (&'static str, OffsetDateTime) {
    let mut rule = ("leads_without_loan_days", file.lead_due);
    if let Some(loans) = file.loans_due.filter(|l| *l >= rule.1) {
        let name = match file.binding_status.as_deref() {
            Some("closed") => "loans_closed_days",
            Some("denied") => "loans_denied_days",
            _ => "loans_withdrawn_days",
        };
        rule = (name, loans);
    }
    match file.credit_due {
        Some(credit) if credit > rule.1 => ("credit_reports_days", credit),
        _ => rule,
    }
}

/// Dispose of the borrower file `lead` at `at`; false when it is not due (any more), held,
/// gone or disposed already. A replay disposes whatever the rules and holds say: the
/// disposal happened before the backup was restored (it is in the ledger already).
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
    let (rule, due_at, details) = match reason {
        Reason::Due => {
            let Some(file) = store::due_file(&mut tx, periods(state), at, lead).await? else {
                return Ok(false);
            };
            let (rule, due_at) = rule_of(&file);
            // In the ledger before the commit: a restore then disposes the file again even if
            // this process dies right after committing. Should the commit fail instead, the
            // entry names a file that was due and not held, which a replay may dispose.
            let entry = LedgerEntry {
                file_id: lead,
                disposed_at: at,
                rule: rule.to_owned(),
            };
            append_to_ledger(state, entry).await?;
            let details = json!({ "rule": rule, "due_at": rfc3339(due_at), "replayed": false });
            (rule.to_owned(), due_at, details)
        }
        Reason::Replay(entry) => {
            let details = json!({ "rule": entry.rule, "disposed_at": rfc3339(entry.disposed_at), "replayed": true });
            // The ledger keeps no due date: the first disposal's time stands for it.
            (entry.rule.clone(), entry.disposed_at, details)
        }
    };
    crate::leads::ops::blank_for_disposal(&mut tx, lead, at).await?;
    crate::loans::ops::blank_for_disposal(&mut tx, lead).await?;
    crate::documents::lifecycle::blank_for_disposal(&mut tx, lead, at).await?;
    crate::requests::ops::blank_for_disposal(&mut tx, lead).await?;
    crate::links::ops::blank_for_disposal(&mut tx, lead, at).await?;
    crate::notifications::ops::blank_for_disposal(&mut tx, lead).await?;
    store::blank_holds(&mut tx, lead).await?;
    state.keys.destroy_file_key(&mut tx, lead, at).await?;
    let replayed = matches!(reason, Reason::Replay(_));
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
            details,
        },
    )
    .await?;
    outbox::enqueue(&mut tx, &Event::FileDisposed { lead_id: lead }, None).await?;
    tx.commit().await?;
    state.keys.forget(lead);
    Ok(true)
}

async fn append_to_ledger(state: &AppState, entry: LedgerEntry) -> anyhow::Result<()> {
    let path = state
        .settings
        .retention
        .ledger_path
        .clone()
        .ok_or_else(|| anyhow::anyhow!("retention.ledger_path is not set"))?;
    tokio::task::spawn_blocking(move || ledger::append(&path, &[entry])).await?
}

/// Delete the objects of every disposed file whose objects are not all gone yet — until its
/// last upload URL has expired, again each round. Each file on its own: one that fails is
/// logged and counted, and the others go on. How many failed.
pub async fn finish(state: &AppState, now: OffsetDateTime) -> u64 {
    let pending = match state.db.acquire().await {
        Ok(mut conn) => store::objects_pending(&mut conn).await,
        Err(e) => Err(e),
    };
    let pending = match pending {
        Ok(pending) => pending,
        Err(e) => {
            tracing::warn!(error = %e, "the disposed files' objects could not be listed");
            return 1;
        }
    };
    let mut failed = 0;
    for lead in pending {
        let done = async {
            if crate::documents::lifecycle::delete_file_objects(state, lead, now).await? {
                let mut conn = state.db.acquire().await?;
                store::mark_objects_deleted(&mut conn, lead).await?;
            }
            anyhow::Ok(())
        };
        if let Err(e) = done.await {
            failed += 1;
            tracing::warn!(file_id = %lead, error = %format!("{e:#}"), "a disposed file's objects were not all deleted");
        }
    }
    failed
}

/// Dispose again every file of `ledger` that the database still holds (after a restore):
/// how many. Safe to run again — a file disposed already is left alone —, which
/// `loanfolio admin retention replay` does after a replay that stopped part-way.
pub async fn replay(state: &AppState, ledger: Vec<LedgerEntry>) -> anyhow::Result<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut replayed = 0;
    let now = OffsetDateTime::now_utc();
    for entry in ledger {
        if seen.insert(entry.file_id)
            && dispose(state, entry.file_id, now, &Reason::Replay(entry)).await?
        {
            replayed += 1;
        }
    }
    let failed = finish(state, now).await;
    anyhow::ensure!(
        failed == 0,
        "{replayed} file(s) disposed again, but the objects of {failed} are not all deleted: run `loanfolio admin retention replay` again"
    );
    Ok(replayed)
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

    fn file(status: Option<&str>, lead: i64, loans: Option<i64>, credit: Option<i64>) -> DueFile {
        DueFile {
            lead_id: Uuid::nil(),
            binding_status: status.map(str::to_owned),
            lead_due: at(lead),
            loans_due: loans.map(at),
            credit_due: credit.map(at),
        }
    }

    #[test]
    fn the_rule_is_the_period_that_ended_last() {
        assert_eq!(
            rule_of(&file(None, 10, None, None)),
            ("leads_without_loan_days", at(10))
        );
        assert_eq!(
            rule_of(&file(None, 10, None, Some(20))),
            ("credit_reports_days", at(20))
        );
        assert_eq!(
            rule_of(&file(Some("closed"), 5, Some(30), Some(20))),
            ("loans_closed_days", at(30))
        );
        assert_eq!(
            rule_of(&file(Some("denied"), 5, Some(30), Some(30))),
            ("loans_denied_days", at(30)),
            "a tie with the credit reports names the loan's rule"
        );
        assert_eq!(
            rule_of(&file(Some("withdrawn"), 5, Some(5), None)),
            ("loans_withdrawn_days", at(5)),
            "a tie with the lead names the loan's rule"
        );
        assert_eq!(
            rule_of(&file(Some("closed"), 40, Some(30), None)),
            ("leads_without_loan_days", at(40)),
            "a lead active after its loans ended keeps the file longer"
        );
    }
}
