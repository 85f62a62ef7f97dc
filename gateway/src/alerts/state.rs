//! The state machine of one alert on one endpoint: ok → pending → firing → ok.
//!
//! Plain synchronous code: the clock comes in as a [`Now`], so tests run on virtual time.
//! A transition to firing and one back to ok each yield one [`Transition`]; staying in a
//! state yields nothing, so an alert notifies once per episode, never on every evaluation.

use std::time::{Duration, Instant, SystemTime};

/// The time of one evaluation: monotonic for durations, wall-clock for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Measures how long a condition has held (immune to clock changes).
    pub instant: Instant,
    /// Shown in notifications and the admin API.
    pub wall: SystemTime,
}

impl Now {
    /// The current time.
    pub fn current() -> Now {
        Now {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// This time plus `elapsed` on both clocks.
    pub fn after(self, elapsed: Duration) -> Now {
        Now {
            instant: self.instant + elapsed,
            wall: self.wall + elapsed,
        }
    }
}

/// Where an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The condition does not hold (or there is no data).
    Ok,
    /// The condition holds, not yet for `for_seconds`.
    Pending,
    /// The condition has held for `for_seconds`; "firing" was notified.
    Firing,
}

impl Phase {
    /// The name in the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Ok => "ok",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
        }
    }
}

/// A change worth a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The condition held for `for_seconds`: the alert fires.
    Fired {
        /// When the condition began to hold.
        since: SystemTime,
    },
    /// A firing alert's condition no longer holds.
    Resolved {
        /// When the condition began to hold (the start of the episode).
        since: SystemTime,
    },
}

/// One alert on one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracker {
    phase: Phase,
    /// When the current episode's condition began to hold (pending and firing).
    episode: Option<(Instant, SystemTime)>,
    /// When the current phase began (`None` for ok before any episode).
    since: Option<SystemTime>,
    /// The last value read; `None` when there was no data.
    value: Option<f64>,
    /// When a notification was last made.
    last_notified: Option<SystemTime>,
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker::new()
    }
}

impl Tracker {
    /// A tracker in the ok phase that has seen nothing.
    pub fn new() -> Tracker {
        Tracker {
            phase: Phase::Ok,
            episode: None,
            since: None,
            value: None,
            last_notified: None,
        }
    }

    /// Takes one evaluation: the metric's `value` (`None`: no data, which counts as not
    /// breaching), whether it `breaches` the threshold, and how long it must breach
    /// (`hold`) before the alert fires.
    pub fn observe(
        &mut self,
        value: Option<f64>,
        breaches: bool,
        hold: Duration,
        now: Now,
    ) -> Option<Transition> {
        self.value = value;
        let breaches = breaches && value.is_some();
        match (self.phase, breaches) {
            (Phase::Ok, true) => {
                self.episode = Some((now.instant, now.wall));
                self.enter(Phase::Pending, now.wall);
                self.fire_if_held(hold, now)
            }
            (Phase::Pending, true) => self.fire_if_held(hold, now),
            (Phase::Firing, true) | (Phase::Ok, false) => None,
            (Phase::Pending, false) => {
                // Flapped back inside `for_seconds`: nothing was notified, nothing is.
                self.episode = None;
                self.enter(Phase::Ok, now.wall);
                None
            }
            (Phase::Firing, false) => {
                let since = self.episode.take().map_or(now.wall, |(_, wall)| wall);
                self.enter(Phase::Ok, now.wall);
                self.last_notified = Some(now.wall);
                Some(Transition::Resolved { since })
            }
        }
    }

    fn fire_if_held(&mut self, hold: Duration, now: Now) -> Option<Transition> {
        let (started, since) = self.episode?;
        if now.instant.saturating_duration_since(started) < hold {
            return None;
        }
        self.enter(Phase::Firing, now.wall);
        self.last_notified = Some(now.wall);
        Some(Transition::Fired { since })
    }

    fn enter(&mut self, phase: Phase, at: SystemTime) {
        self.phase = phase;
        self.since = Some(at);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When the current phase began (`None`: ok since the start).
    pub fn since(&self) -> Option<SystemTime> {
        self.since
    }

    /// The last value read.
    pub fn value(&self) -> Option<f64> {
        self.value
    }

    /// When a notification was last made for this alert.
    pub fn last_notified(&self) -> Option<SystemTime> {
        self.last_notified
    }
}
