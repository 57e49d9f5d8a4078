//! Reminders for outstanding document requests (issue 7). A scheduler in the workers looks
//! for due reminders every `reminders.tick_secs`; a PostgreSQL advisory lock held for the
//! round's transaction makes it one runner at a time across replicas. A round marks the
//! requests reminded and writes one `reminder.due` event per loan in the same transaction,
//! so a crash sends nothing twice and loses nothing; the notifier turns the event into the
//! borrower's email.
//!
//! The clock is a parameter of [`tick`]: the loop passes the system time, tests pass theirs.

use std::time::Duration;

use anyhow::Context;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::app::AppState;
use crate::config::ReminderSettings;
use crate::db::outbox;
use crate::http::upload_links::link_takes_files;

/// The "scheduler" name `worker.consumers` uses to place the reminders runner.
pub const RUNNER: &str = "reminder-scheduler";
pub const TOPIC: &str = "reminder.due";

/// Distinguishes this lock from every other advisory lock on the database.
const LOCK_KEY: i64 = 0x6c66_7265_6d69_6e64; // "lfremind"

#[derive(Debug, Clone)]
pub struct Schedule {
    first: time::Duration,
    every: time::Duration,
    max: i32,
    /// Minutes after local midnight.
    quiet_start: u16,
    quiet_end: u16,
    quiet_days: Vec<Weekday>,
    tz: TimeZone,
    window: time::Duration,
}

fn minutes_of(key: &str, value: &str) -> anyhow::Result<u16> {
    let (h, m) = value
        .split_once(':')
        .with_context(|| format!("reminders.{key}: expected HH:MM"))?;
    let (h, m): (u16, u16) = (
        h.parse()
            .with_context(|| format!("reminders.{key}: hour"))?,
        m.parse()
            .with_context(|| format!("reminders.{key}: minute"))?,
    );
    anyhow::ensure!(
        h < 24 && m < 60,
        "reminders.{key}: {value} is not a time of day"
    );
    Ok(h * 60 + m)
}

fn weekday(name: &str) -> anyhow::Result<Weekday> {
    Ok(match name.to_ascii_lowercase().get(..3) {
        Some("mon") => Weekday::Monday,
        Some("tue") => Weekday::Tuesday,
        Some("wed") => Weekday::Wednesday,
        Some("thu") => Weekday::Thursday,
        Some("fri") => Weekday::Friday,
        Some("sat") => Weekday::Saturday,
        Some("sun") => Weekday::Sunday,
        _ => anyhow::bail!("reminders.quiet_days: {name} is not a day (mon … sun)"),
    })
}

impl Schedule {
    pub fn from_settings(s: &ReminderSettings) -> anyhow::Result<Self> {
        anyhow::ensure!(s.every_days >= 1, "reminders.every_days must be at least 1");
        Ok(Self {
            first: time::Duration::days(i64::from(s.first_after_days)),
            every: time::Duration::days(i64::from(s.every_days)),
            max: i32::try_from(s.max_reminders).context("reminders.max_reminders")?,
            quiet_start: minutes_of("quiet_hours_start", &s.quiet_hours_start)?,
            quiet_end: minutes_of("quiet_hours_end", &s.quiet_hours_end)?,
            quiet_days: s
                .quiet_days
                .iter()
                .map(|d| weekday(d))
                .collect::<anyhow::Result<_>>()?,
            tz: TimeZone::get(&s.timezone)
                .with_context(|| format!("reminders.timezone: unknown zone {}", s.timezone))?,
            window: time::Duration::minutes(i64::from(s.digest_window_minutes)),
        })
    }

    /// Whether `now` falls in quiet hours or on a quiet day, in the lender's time zone.
    pub fn is_quiet(&self, now: OffsetDateTime) -> bool {
        let Ok(at) = jiff::Timestamp::from_second(now.unix_timestamp()) else {
            return true;
        };
        let local = at.to_zoned(self.tz.clone());
        if self.quiet_days.contains(&local.weekday()) {
            return true;
        }
        let minute = u16::try_from(local.hour()).unwrap_or(0) * 60
            + u16::try_from(local.minute()).unwrap_or(0);
        match self.quiet_start.cmp(&self.quiet_end) {
            std::cmp::Ordering::Equal => false,
            std::cmp::Ordering::Less => (self.quiet_start..self.quiet_end).contains(&minute),
            // The span crosses midnight, e.g. 20:00–08:00.
            std::cmp::Ordering::Greater => minute >= self.quiet_start || minute < self.quiet_end,
        }
    }
}

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
    // language=PostgreSQL
    let ours: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *tx)
        .await?;
    if !ours {
        return Ok(0);
    }
    // Each request still waiting on the borrower (`received`, `accepted` and
    // `not_applicable` stop reminders; a rejected one asks for a new file) of a loan still
    // collecting documents and with a live emailed link, with when its next reminder falls
    // due; those due by now + the digest window are candidates.
    // A live link is unexpired, unrevoked and not used up (it would answer 410).
    let due: Vec<(Uuid, Uuid, i32, OffsetDateTime)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        // language=PostgreSQL
        "select r.id, r.loan_id, r.reminders_sent,
                case when r.reminders_sent = 0 then r.created_at + $2 else r.last_reminded_at + $3 end as due_at
           from document_requests r
           join loans o on o.id = r.loan_id
           join leads l on l.id = r.lead_id
          where r.state in ('outstanding', 'rejected')
            and o.status not in ('closed', 'denied', 'withdrawn')
            and r.reminders_sent < $4
            and l.email_opted_out_at is null
            and exists (select 1 from upload_links u
                         where u.loan_id = r.loan_id and u.token_enc is not null
                           and {open})
            and case when r.reminders_sent = 0 then r.created_at + $2 else r.last_reminded_at + $3 end <= $1 + $5
          order by r.loan_id, r.id
          for update of r skip locked",
        open = link_takes_files("$1")
    )))
    .bind(now)
    .bind(schedule.first)
    .bind(schedule.every)
    .bind(schedule.max)
    .bind(schedule.window)
    .fetch_all(&mut *tx)
    .await?;

    let mut queued = 0;
    for group in due.chunk_by(|a, b| a.1 == b.1) {
        // A digest goes out when its earliest request is due; the others ride along.
        if group.iter().all(|(_, _, _, due_at)| *due_at > now) {
            continue;
        }
        let loan = group[0].1;
        let ids: Vec<Uuid> = group.iter().map(|r| r.0).collect();
        let number = group.iter().map(|r| r.2).max().unwrap_or(0) + 1;
        // language=PostgreSQL
        sqlx::query(
            "update document_requests set reminders_sent = reminders_sent + 1, last_reminded_at = $2
              where id = any($1)",
        )
        .bind(&ids)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        outbox::enqueue(
            &mut tx,
            TOPIC,
            json!({"loanId": loan, "requestIds": ids, "reminder": number}),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ReminderSettings {
        ReminderSettings {
            enabled: true,
            first_after_days: 2,
            every_days: 3,
            max_reminders: 3,
            quiet_hours_start: "20:00".into(),
            quiet_hours_end: "08:00".into(),
            quiet_days: vec!["sat".into(), "sun".into()],
            timezone: "America/New_York".into(),
            digest_window_minutes: 60,
            tick_secs: 300,
        }
    }

    fn at(rfc3339: &str) -> OffsetDateTime {
        OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap()
    }

    #[test]
    fn quiet_hours_cross_midnight_in_the_lenders_zone() {
        let s = Schedule::from_settings(&settings()).unwrap();
        // Wednesday 2026-12-02. New York is UTC-5 in December.
        assert!(
            !s.is_quiet(at("2026-12-02T13:00:00Z")),
            "08:00 local is open"
        );
        assert!(
            s.is_quiet(at("2026-12-02T12:59:00Z")),
            "07:59 local is quiet"
        );
        assert!(
            !s.is_quiet(at("2026-12-03T00:59:00Z")),
            "19:59 local is open"
        );
        assert!(
            s.is_quiet(at("2026-12-03T01:00:00Z")),
            "20:00 local is quiet"
        );
        // Saturday noon local.
        assert!(s.is_quiet(at("2026-12-05T17:00:00Z")));
        // Summer time: 08:30 EDT is 12:30 UTC.
        assert!(!s.is_quiet(at("2026-07-01T12:30:00Z")));
    }

    #[test]
    fn equal_bounds_mean_no_quiet_hours_and_bad_values_are_refused() {
        let mut c = settings();
        c.quiet_hours_start = "00:00".into();
        c.quiet_hours_end = "00:00".into();
        c.quiet_days.clear();
        let s = Schedule::from_settings(&c).unwrap();
        assert!(!s.is_quiet(at("2026-12-05T03:00:00Z")));
        for (field, value) in [
            ("tz", "Mars/Olympus"),
            ("start", "25:00"),
            ("day", "funday"),
        ] {
            let mut bad = settings();
            match field {
                "tz" => bad.timezone = value.into(),
                "start" => bad.quiet_hours_start = value.into(),
                _ => bad.quiet_days = vec![value.into()],
            }
            assert!(Schedule::from_settings(&bad).is_err(), "{field}={value}");
        }
    }
}
