//! Disposal by crypto-shredding (docs/operations/retention.md). The unit is the borrower
//! file — a lead and all its loans — disposed once every loan of it is final and past its
//! rule, the lead past its own (from its last activity) and its credit reports past theirs,
//! and no legal hold is in force.
//!
//! Files are disposed a few dozen to a transaction, which locks their leads, checks again
//! that each is due and not held (a hold being placed locks the same row), appends the
//! disposals to the ledger outside the database, blanks the clear-text names and every
//! sealed field of every aggregate, destroys each file's wrapped data key, records the
//! disposals, audits `lead.disposed` with its rule on each file and emits `file.disposed`
//! for each, which makes every process drop its cached copy of the key. After the commit
//! the files' objects are deleted from both buckets — again on later rounds while an
//! upload URL of a file may still be used. A transaction that fails is retried file by
//! file, so one bad file holds no other back.

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

/// Due files read per batch; their objects go after each batch.
const BATCH: i64 = 500;
/// Files disposed per transaction: one ledger sync and one commit for all of them.
const PER_TRANSACTION: usize = 50;

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
        let ids: Vec<Uuid> = due.iter().map(|f| f.lead_id).collect();
        let disposed_before = summary.disposed;
        for chunk in ids.chunks(PER_TRANSACTION) {
            let started = std::time::Instant::now();
            let outcome = dispose_many(state, chunk, now, None).await;
            yield_after(state, started).await;
            match outcome {
                Ok(done) => summary.disposed += done.len() as u64,
                // One bad file must not hold the others back: each alone, and the one
                // that fails is left for the next round.
                Err(_) => {
                    for lead in chunk {
                        match dispose_many(state, &[*lead], now, None).await {
                            Ok(done) => summary.disposed += done.len() as u64,
                            Err(e) => {
                                summary.failed += 1;
                                skip.push(*lead);
                                tracing::warn!(file_id = %lead, error = %format!("{e:#}"), "a due file was not disposed");
                            }
                        }
                    }
                }
            }
        }
        summary.failed += finish(state, now).await;
        // A batch that disposed nothing would come back the same: the next round retries.
        if due.len() < BATCH as usize || summary.disposed == disposed_before {
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

/// A period in days as SQL takes it (periods are at most 36,500 days: never saturated).
fn days(d: u32) -> i32 {
    i32::try_from(d).unwrap_or(i32::MAX)
}

/// Disposal is background work that must not crowd out the agents: after each step it
/// waits so that its steps take at most `retention.work_share` of the time it runs.
async fn yield_after(state: &AppState, started: std::time::Instant) {
    let share = state.settings.retention.work_share.clamp(0.01, 1.0);
    tokio::time::sleep(started.elapsed().mul_f64(1.0 / share - 1.0)).await;
}

fn periods(state: &AppState) -> Periods {
    let r = &state.settings.retention;
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

/// Dispose of those of the borrower files `files` that are due at `at` (still there, not
/// disposed, not held — checked again under their locks), in one transaction; the ones
/// disposed. With `replay` (a restore's ledger, by file), the files it names are disposed
/// whatever the rules and holds say: that happened before the backup was restored.
pub async fn dispose_many(
    state: &AppState,
    files: &[Uuid],
    at: OffsetDateTime,
    replay: Option<&std::collections::HashMap<Uuid, LedgerEntry>>,
) -> anyhow::Result<Vec<Uuid>> {
    let mut tx = state.db.begin().await?;
    let locked = crate::leads::ops::lock_for_disposal(&mut tx, files).await?;
    if locked.is_empty() {
        return Ok(Vec::new());
    }
    let chosen: Vec<(Uuid, String, OffsetDateTime, serde_json::Value)> = match replay {
        None => store::due_among(&mut tx, periods(state), at, &locked)
            .await?
            .iter()
            .map(|file| {
                let (rule, due_at) = rule_of(file);
                let details = json!({ "rule": rule, "due_at": rfc3339(due_at), "replayed": false });
                (file.lead_id, rule.to_owned(), due_at, details)
            })
            .collect(),
        Some(ledger) => locked
            .iter()
            .filter_map(|lead| ledger.get(lead))
            .map(|entry| {
                let details = json!({ "rule": entry.rule, "disposed_at": rfc3339(entry.disposed_at), "replayed": true });
                // The ledger keeps no due date: the first disposal's time stands for it.
                (entry.file_id, entry.rule.clone(), entry.disposed_at, details)
            })
            .collect(),
    };
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = chosen.iter().map(|c| c.0).collect();
    if replay.is_none() {
        // In the ledger before the commit: a restore then disposes these files again even if
        // this process dies right after committing. Should the commit fail instead, the
        // entries name files that were due and not held, which a replay may dispose.
        let entries = chosen
            .iter()
            .map(|(lead, rule, _, _)| LedgerEntry {
                file_id: *lead,
                disposed_at: at,
                rule: rule.clone(),
            })
            .collect();
        append_to_ledger(state, entries).await?;
    }
    crate::leads::ops::blank_for_disposal(&mut tx, &ids, at).await?;
    crate::loans::ops::blank_for_disposal(&mut tx, &ids).await?;
    crate::documents::lifecycle::blank_for_disposal(&mut tx, &ids, at).await?;
    crate::requests::ops::blank_for_disposal(&mut tx, &ids).await?;
    crate::links::ops::blank_for_disposal(&mut tx, &ids, at).await?;
    crate::notifications::ops::blank_for_disposal(&mut tx, &ids).await?;
    store::blank_holds(&mut tx, &ids).await?;
    state.keys.destroy_file_keys(&mut tx, &ids, at).await?;
    let records: Vec<store::NewDisposal<'_>> = chosen
        .iter()
        .map(|(lead, rule, due_at, _)| store::NewDisposal {
            lead: *lead,
            rule,
            due_at: *due_at,
        })
        .collect();
    store::record_disposals(&mut tx, &records, at, replay.is_some()).await?;
    let retention = Actor::system(RUNNER, "Retention");
    for (lead, _, _, details) in chosen {
        audit::record(
            &mut tx,
            audit::Entry {
                chain: lead,
                actor: &retention,
                action: "lead.disposed",
                entity_type: "lead",
                entity_id: lead,
                request_id: None,
                details,
            },
        )
        .await?;
        outbox::enqueue(&mut tx, &Event::FileDisposed { lead_id: lead }, None).await?;
    }
    tx.commit().await?;
    for lead in &ids {
        state.keys.forget(*lead);
    }
    Ok(ids)
}

async fn append_to_ledger(state: &AppState, entries: Vec<LedgerEntry>) -> anyhow::Result<()> {
    let path = state
        .settings
        .retention
        .ledger_path
        .clone()
        .ok_or_else(|| anyhow::anyhow!("retention.ledger_path is not set"))?;
    tokio::task::spawn_blocking(move || ledger::append(&path, &entries)).await?
}

/// Delete the objects of every disposed file whose objects are not all gone yet — until its
/// last upload URL has expired, again each round — 200 files at a time. A file whose
/// objects fail is logged and tried again next round; the others go on. How many failed.
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
    for chunk in pending.chunks(200) {
        let started = std::time::Instant::now();
        let done = async {
            let done = crate::documents::lifecycle::delete_files_objects(state, chunk, now).await?;
            let mut conn = state.db.acquire().await?;
            store::mark_objects_deleted(&mut conn, &done).await?;
            anyhow::Ok(done.len())
        };
        let done = done.await;
        yield_after(state, started).await;
        match done {
            // Files still open to an upload are not failures: they wait for their URL to expire.
            Ok(_) => {}
            Err(e) => {
                failed += chunk.len() as u64;
                tracing::warn!(files = chunk.len(), error = %format!("{e:#}"), "disposed files' objects were not all deleted");
            }
        }
    }
    failed
}

/// Dispose again every file of `ledger` that the database still holds (after a restore):
/// how many. Safe to run again — a file disposed already is left alone —, which
/// `loanfolio admin retention replay` does after a replay that stopped part-way.
pub async fn replay(state: &AppState, ledger: Vec<LedgerEntry>) -> anyhow::Result<usize> {
    let now = OffsetDateTime::now_utc();
    let by_file: std::collections::HashMap<Uuid, LedgerEntry> =
        ledger.into_iter().map(|e| (e.file_id, e)).collect();
    let files: Vec<Uuid> = by_file.keys().copied().collect();
    let mut replayed = 0;
    for chunk in files.chunks(PER_TRANSACTION) {
        replayed += dispose_many(state, chunk, now, Some(&by_file)).await?.len();
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
