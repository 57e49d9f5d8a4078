//! The reminder schedule, parsed from `[reminders]` at load (so a bad time zone or time of
//! day refuses to start): when reminders are due, and the lender's quiet hours and days.

use anyhow::Context;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use time::OffsetDateTime;

use super::ReminderSettings;

#[derive(Debug, Clone)]
pub struct Schedule {
    pub first: time::Duration,
    pub every: time::Duration,
    pub max: i32,
    /// Minutes after local midnight.
    pub quiet_start: u16,
    pub quiet_end: u16,
    pub quiet_days: Vec<Weekday>,
    pub tz: TimeZone,
    pub window: time::Duration,
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
