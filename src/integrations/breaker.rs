//! A circuit breaker per integration: closed → open when the failure rate over a sliding
//! window reaches the threshold (with a minimum number of calls) → half-open after the
//! cool-down, letting one probe through → closed on its success, open again on its failure.
//! While open, calls are refused at once: a dead bureau is not hammered.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::BreakerSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// For the `circuit_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn level(self) -> i64 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: State,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
    calls: VecDeque<(Instant, bool)>,
}

#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

/// The breaker refused the call.
#[derive(Debug, PartialEq, Eq)]
pub struct Open {
    pub retry_in: Duration,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            inner: Mutex::new(Inner {
                state: State::Closed,
                opened_at: None,
                probe_in_flight: false,
                calls: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> State {
        let mut inner = self.lock();
        self.advance(&mut inner, Instant::now());
        inner.state
    }

    fn advance(&self, inner: &mut Inner, now: Instant) {
        if inner.state == State::Open
            && inner.opened_at.is_some_and(|t| {
                now.duration_since(t) >= Duration::from_secs(self.settings.open_secs)
            })
        {
            inner.state = State::HalfOpen;
            inner.probe_in_flight = false;
        }
    }

    /// May a call go out now? In half-open, only one probe at a time.
    pub fn permit(&self) -> Result<(), Open> {
        self.permit_at(Instant::now())
    }

    fn permit_at(&self, now: Instant) -> Result<(), Open> {
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        let cool_down = Duration::from_secs(self.settings.open_secs);
        match inner.state {
            State::Closed => Ok(()),
            State::HalfOpen if !inner.probe_in_flight => {
                inner.probe_in_flight = true;
                Ok(())
            }
            State::HalfOpen => Err(Open {
                retry_in: Duration::from_secs(1),
            }),
            State::Open => Err(Open {
                retry_in: inner
                    .opened_at
                    .map(|t| cool_down.saturating_sub(now.duration_since(t)))
                    .unwrap_or(cool_down),
            }),
        }
    }

    /// The outcome of a permitted call. Permanent answers (a 4xx about the request) are
    /// successes here: the system itself is working.
    pub fn record(&self, success: bool) {
        self.record_at(success, Instant::now())
    }

    fn record_at(&self, success: bool, now: Instant) {
        let mut inner = self.lock();
        match inner.state {
            State::HalfOpen => {
                inner.probe_in_flight = false;
                inner.calls.clear();
                if success {
                    inner.state = State::Closed;
                    inner.opened_at = None;
                } else {
                    inner.state = State::Open;
                    inner.opened_at = Some(now);
                }
                return;
            }
            State::Open => return, // a straggler from before it opened
            State::Closed => {}
        }
        let window = Duration::from_secs(self.settings.window_secs);
        inner.calls.push_back((now, success));
        while inner
            .calls
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > window)
        {
            inner.calls.pop_front();
        }
        let total = inner.calls.len();
        let failures = inner.calls.iter().filter(|(_, ok)| !ok).count();
        if total >= self.settings.min_requests as usize
            && failures as f64 / total as f64 >= self.settings.failure_rate
        {
            inner.state = State::Open;
            inner.opened_at = Some(now);
            inner.calls.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            window_secs: 30,
            min_requests: 4,
            failure_rate: 0.5,
            open_secs: 10,
        })
    }

    #[test]
    fn opens_on_the_failure_rate_probes_after_the_cool_down_and_closes_on_success() {
        let b = breaker();
        let t0 = Instant::now();
        for ok in [true, false, true] {
            b.record_at(ok, t0);
        }
        assert_eq!(
            b.state(),
            State::Closed,
            "below the minimum number of calls"
        );
        b.record_at(false, t0);
        assert_eq!(b.state(), State::Open, "2 of 4 failed");
        assert!(b.permit_at(t0 + Duration::from_secs(5)).is_err());
        // After the cool-down: one probe, not two.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.permit_at(later), Ok(()));
        assert!(b.permit_at(later).is_err(), "one probe at a time");
        b.record_at(false, later);
        assert!(
            b.permit_at(later + Duration::from_secs(1)).is_err(),
            "a failed probe re-opens"
        );
        let again = later + Duration::from_secs(10);
        assert_eq!(b.permit_at(again), Ok(()));
        b.record_at(true, again);
        assert_eq!(b.permit_at(again), Ok(()));
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn old_failures_leave_the_window() {
        let b = breaker();
        let t0 = Instant::now();
        b.record_at(false, t0);
        b.record_at(false, t0);
        let later = t0 + Duration::from_secs(31);
        for _ in 0..3 {
            b.record_at(true, later);
        }
        b.record_at(false, later);
        assert_eq!(b.state(), State::Closed, "1 failure in 4 within the window");
    }
}
