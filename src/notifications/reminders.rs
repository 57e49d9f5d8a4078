//! Reminders for outstanding document requests (issue 7). A scheduler in the workers looks
//! for due reminders every `reminders.tick_secs`; a PostgreSQL advisory lock held for the
//! round's transaction makes it one runner at a time across replicas. A round marks the
//! requests reminded and writes one `reminder.due` event per loan in the same transaction,
//! so a crash sends nothing twice and loses nothing; the notifier turns the event into the
//! borrower's email.
//!
//! The clock is a parameter of [`tick`]: the loop passes the system time, tests pass theirs.

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::store;
use crate::config::Schedule;
use crate::db::outbox;
use crate::events::Event;
use crate::state::AppState;

/// The "scheduler" name `worker.consumers` uses to place the reminders runner.
pub const RUNNER: &str = "reminder-scheduler";

/// Distinguishes this lock from every other advisory lock on the database.
const LOCK_KEY: i64 = 0x6c66_7265_6d69_6e64; // "lfremind"

/// One scheduling round at `now`: the number of reminder messages queued (one per loan).
/// Does nothing in quiet hours, or while another replica holds the round.
pub async fn tick(
    state: &AppState,
    schedule: &Schedule,
    now: OffsetDateTime,
) -> anyhow::Result<usize> {
    if schedule.is_quiet(now) || schedule.max == 0 {
        return Ok(0);
    }
    let mut tx = state.db.begin().await?;
    let ours = store::try_round_lock(&mut tx, LOCK_KEY).await?;
    if !ours {
        return Ok(0);
    }
    // Each request still waiting on the borrower (`received`, `accepted` and
    // `not_applicable` stop reminders; a rejected one asks for a new file) of a loan still
    // collecting documents and with a live emailed link, with when its next reminder falls
    // due; those due by now + the digest window are candidates.
    // A live link is unexpired, unrevoked and not used up (it would answer 410).
    let due = store::due_reminders(
        &mut tx,
        now,
        schedule.first,
        schedule.every,
        schedule.max,
        schedule.window,
    )
    .await?;

    let mut queued = 0;
    for group in due.chunk_by(|a, b| a.loan_id == b.loan_id) {
        // A digest goes out when its earliest request is due; the others ride along.
        if group.iter().all(|r| r.due_at > now) {
            continue;
        }
        let loan = group[0].loan_id;
        let ids: Vec<Uuid> = group.iter().map(|r| r.id).collect();
        let number = group.iter().map(|r| r.reminders_sent).max().unwrap_or(0) + 1;
        crate::requests::ops::mark_reminded(&mut tx, &ids, now).await?;
        outbox::enqueue(
            &mut tx,
            &Event::ReminderDue {
                loan_id: loan,
                request_ids: ids,
                reminder: number,
            },
            None,
        )
        .await?;
        queued += 1;
    }
    tx.commit().await?;
    Ok(queued)
}

/// The scheduler loop of `worker` (and `serve` with workers).
pub async fn run(state: AppState) {
    let schedule = match Schedule::from_settings(&state.settings.reminders) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reminders are off: invalid configuration");
            return;
        }
    };
    let every = Duration::from_secs(state.settings.reminders.tick_secs.max(1));
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match tick(&state, &schedule, OffsetDateTime::now_utc()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(messages = n, "document reminders queued"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "reminder round failed"),
        }
    }
}
