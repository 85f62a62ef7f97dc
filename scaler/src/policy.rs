//! The autoscaling policy (DESIGN.md §4): how many workers an endpoint should run, decided
//! from a [`Sample`] of its demand once per tick, with the clock passed in as a [`Duration`]
//! since any fixed epoch, so tests run on virtual time.
//!
//! Rules, strongest first:
//! 1. `stop` → 0; `pin(n)` → n; `min_workers == max_workers` → `min_workers`.
//! 2. At zero, only current demand (in flight, arrivals, queued jobs, or [`Policy::wake`])
//!    starts a worker; an average still holding old load does not.
//! 3. Panic: when the panic window asks for ≥ `panic_threshold` × ready workers (counted as
//!    at least one), scale up at once and never down until a stable window passes without
//!    that condition.
//! 4. Idle (nothing in flight, arriving or queued for `idle_timeout_seconds`): straight down
//!    to `min_workers`; to zero only when `min_workers = 0` and `initial_cooldown_seconds`
//!    have passed since the last wake (else one worker stays).
//! 5. Otherwise desired = ceil(stable-window average / target): up at once; down at most one
//!    worker per tick, and never below the highest count asked for within the stable window
//!    (so load oscillating faster than the window cannot flap the count), never to zero.
//! 6. A non-empty async queue keeps one worker; the result is clamped to
//!    `[min_workers, max_workers]`.

use std::time::Duration;

use crate::decision::{Decision, Reason};
use crate::settings::{Metric, ScalingSettings};
use crate::window::Window;

/// One tick's view of an endpoint's demand and workers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Requests in flight over the endpoint, counting open WebSockets and requests held
    /// while no worker is ready.
    pub in_flight: u32,
    /// Requests that arrived since the previous tick (held ones included).
    pub arrivals: u64,
    /// With `metric = "custom"`: the scraped gauge summed over the ready workers; `None` when
    /// nothing could be scraped this tick (the tick then adds nothing to the average).
    pub custom: Option<f64>,
    /// Async jobs queued and not yet dispatched.
    pub queue_depth: u64,
    /// Workers passing their health check.
    pub ready: u32,
    /// Workers started but not ready yet (for logs; the policy decides on `ready`).
    pub starting: u32,
}

impl Sample {
    /// Whether anything is in flight, arrived since the last tick, or queued.
    pub fn has_demand(&self) -> bool {
        self.in_flight > 0 || self.arrivals > 0 || self.queue_depth > 0
    }
}

/// Who decides the worker count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The autoscaler.
    Auto,
    /// Pinned by hand to this many workers (clamped to `[min_workers, max_workers]`).
    Pinned(u32),
    /// Stopped: zero workers, traffic refused.
    Stopped,
}

impl Mode {
    /// `auto`, `pinned` or `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Pinned(_) => "pinned",
            Mode::Stopped => "stopped",
        }
    }
}

/// One endpoint's autoscaler: feed it a [`Sample`] every tick and act on its [`Decision`].
#[derive(Debug, Clone)]
pub struct Policy {
    settings: ScalingSettings,
    mode: Mode,
    desired: u32,
    reason: Reason,
    sample: Sample,
    last_tick: Duration,
    /// Arrivals seen on a tick that took no time, counted with the next one.
    carried_arrivals: u64,
    /// The metric per tick, summed over the endpoint.
    metric: Window,
    /// The stable-window recommendation per tick, for the scale-down delay.
    recommended: Window,
    /// When the panic condition last held; `Some` while panicking.
    panic_at: Option<Duration>,
    last_demand: Duration,
    last_wake: Option<Duration>,
}

impl Policy {
    /// A policy created at `now`, wanting `min_workers`. `settings` should have no
    /// [`ScalingSettings::problems`]; others give meaningless counts but never panic.
    pub fn new(settings: ScalingSettings, now: Duration) -> Policy {
        Policy {
            desired: settings.min_workers,
            reason: Reason::MinWorkers,
            settings,
            mode: Mode::Auto,
            sample: Sample::default(),
            last_tick: now,
            carried_arrivals: 0,
            metric: Window::default(),
            recommended: Window::default(),
            panic_at: None,
            last_demand: now,
            last_wake: None,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &ScalingSettings {
        &self.settings
    }

    /// Who decides the count now.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The count of the last decision.
    pub fn desired(&self) -> u32 {
        self.desired
    }

    /// Whether the policy is in panic mode.
    pub fn panicking(&self) -> bool {
        self.panic_at.is_some()
    }

    /// One tick: records `sample` (taken at `now`, which must not go backwards) and decides.
    pub fn tick(&mut self, now: Duration, sample: Sample) -> Decision {
        self.observe(now, sample);
        self.decide(now)
    }

    /// Decides again on the last sample, without a new one (the opening decision).
    pub fn decide_now(&mut self, now: Duration) -> Decision {
        self.decide(now)
    }

    /// Demand found no ready worker (DESIGN.md §4: wake at once, no tick wait). At zero in
    /// auto mode this asks for one worker now; otherwise it changes nothing but the idle clock
    /// (and returns the standing decision).
    pub fn wake(&mut self, now: Duration) -> Decision {
        self.last_demand = self.last_demand.max(now);
        let s = &self.settings;
        if self.mode != Mode::Auto || s.min_workers == s.max_workers {
            return self.decide(now);
        }
        if self.desired == 0 {
            let one = clamp(1, s.min_workers, s.max_workers);
            return self.commit(now, one, Reason::WakeOnDemand);
        }
        self.commit(now, self.desired, self.reason)
    }

    /// Pins the count to `workers` (clamped to `[min_workers, max_workers]`) until
    /// [`Policy::unpin`]; overrides everything but [`Policy::stop`] (ignored while stopped).
    pub fn pin(&mut self, now: Duration, workers: u32) -> Decision {
        if self.mode != Mode::Stopped {
            self.mode = Mode::Pinned(workers);
        }
        self.decide(now)
    }

    /// Back to autoscaling, from the pinned count, with the last sample.
    pub fn unpin(&mut self, now: Duration) -> Decision {
        if let Mode::Pinned(_) = self.mode {
            self.mode = Mode::Auto;
        }
        self.decide(now)
    }

    /// Stops the endpoint: zero workers until [`Policy::start`], whatever the demand.
    pub fn stop(&mut self, now: Duration) -> Decision {
        self.mode = Mode::Stopped;
        self.decide(now)
    }

    /// Starts a stopped endpoint in auto mode (a pin from before the stop is not restored).
    pub fn start(&mut self, now: Duration) -> Decision {
        if self.mode == Mode::Stopped {
            self.mode = Mode::Auto;
        }
        self.decide(now)
    }

    /// Replaces the settings (a hot `PATCH`) and decides again with the last sample. A new
    /// metric or target restarts the averages, since old values no longer compare.
    pub fn set_settings(&mut self, now: Duration, settings: ScalingSettings) -> Decision {
        if settings.metric != self.settings.metric || settings.target != self.settings.target {
            self.metric.clear();
            self.recommended.clear();
            self.panic_at = None;
        }
        self.settings = settings;
        self.decide(now)
    }

    fn observe(&mut self, now: Duration, sample: Sample) {
        let s = &self.settings;
        let start = self.last_tick;
        let arrivals = sample.arrivals.saturating_add(self.carried_arrivals);
        if now > start {
            self.carried_arrivals = 0;
            self.last_tick = now;
            let value = match s.metric {
                Metric::Concurrency => Some(f64::from(sample.in_flight)),
                Metric::Rps => Some(arrivals as f64 / (now - start).as_secs_f64()),
                Metric::Custom(_) => sample.custom,
            };
            if let Some(value) = value.filter(|v| v.is_finite()) {
                self.metric.push(start, now, value.max(0.0));
            }
        } else {
            self.carried_arrivals = arrivals;
        }
        if sample.has_demand() {
            self.last_demand = self.last_demand.max(now);
        }
        self.sample = sample;

        let keep = s.stable_window.max(s.panic_window);
        self.metric.forget_until(now.saturating_sub(keep));
        self.recommended
            .forget_until(now.saturating_sub(s.stable_window));
        if let Some(avg) = self.metric.average(now, s.stable_window) {
            let workers = workers_for(avg, s.target);
            self.recommended.push(now, now, f64::from(workers));
        }
        let panic_workers = self.panic_workers(now);
        let ready = f64::from(sample.ready.max(1));
        if panic_workers > 0 && f64::from(panic_workers) >= s.panic_threshold * ready {
            self.panic_at = Some(now);
        } else if self
            .panic_at
            .is_some_and(|at| now.saturating_sub(at) >= s.stable_window)
        {
            self.panic_at = None;
        }
    }

    fn decide(&mut self, now: Duration) -> Decision {
        let s = &self.settings;
        let (desired, reason) = match self.mode {
            Mode::Stopped => (0, Reason::Stopped),
            Mode::Pinned(n) => (clamp(n, s.min_workers, s.max_workers), Reason::Pinned),
            Mode::Auto if s.min_workers == s.max_workers => (s.min_workers, Reason::Disabled),
            Mode::Auto => self.autoscale(now),
        };
        self.commit(now, desired, reason)
    }

    fn autoscale(&self, now: Duration) -> (u32, Reason) {
        let s = &self.settings;
        let prev = self.desired;
        let sample = &self.sample;
        let demand = sample.has_demand();
        let idle = !demand && now.saturating_sub(self.last_demand) >= s.idle_timeout;
        let cooled = self
            .last_wake
            .is_none_or(|at| now.saturating_sub(at) >= s.initial_cooldown);
        let stable = self.metric.average(now, s.stable_window);
        let rec = stable.map_or(prev, |avg| workers_for(avg, s.target));

        let (wanted, reason) = if prev == 0 && !demand {
            // At zero only new demand wakes the endpoint, not an average of old load.
            (0, Reason::ScaleToZeroIdle)
        } else if self.panicking() {
            (rec.max(self.panic_workers(now)).max(prev), Reason::Panic)
        } else if idle {
            match (s.min_workers, cooled) {
                (0, true) => (0, Reason::ScaleToZeroIdle),
                (0, false) => (1, Reason::Cooldown),
                (min, _) => (min, Reason::Idle),
            }
        } else if stable.is_none() {
            (prev, Reason::NoData)
        } else if rec > prev {
            (rec, Reason::AboveTarget)
        } else if rec == prev {
            (prev, Reason::OnTarget)
        } else {
            let held = self
                .recommended
                .max(now, s.stable_window)
                .map_or(rec, |m| m as u32)
                .max(rec);
            let step = held.max(prev - 1);
            if step >= prev {
                (prev, Reason::ScaleDownDelay)
            } else {
                (step, Reason::BelowTarget)
            }
        };
        // Zero is only for an idle endpoint (above); anything else keeps one worker.
        let (wanted, reason) = if wanted == 0 && reason != Reason::ScaleToZeroIdle {
            if sample.queue_depth > 0 {
                (1, Reason::QueueKeepsOne)
            } else if prev == 0 {
                (1, Reason::WakeOnDemand)
            } else {
                (1, Reason::NotIdle)
            }
        } else {
            (wanted, reason)
        };
        let desired = clamp(wanted, s.min_workers, s.max_workers);
        match desired.cmp(&wanted) {
            std::cmp::Ordering::Greater => (desired, Reason::MinWorkers),
            std::cmp::Ordering::Less => (desired, Reason::MaxWorkers),
            std::cmp::Ordering::Equal => (desired, reason),
        }
    }

    fn commit(&mut self, now: Duration, desired: u32, reason: Reason) -> Decision {
        let previous = self.desired;
        if previous == 0 && desired > 0 {
            // Any start from zero is a cold start the initial cooldown protects.
            self.last_wake = Some(now);
        }
        self.desired = desired;
        self.reason = reason;
        Decision {
            desired,
            previous,
            reason,
            stable: self.metric.average(now, self.settings.stable_window),
            panic: self.metric.average(now, self.settings.panic_window),
            panicking: self.panicking(),
        }
    }

    fn panic_workers(&self, now: Duration) -> u32 {
        self.metric
            .average(now, self.settings.panic_window)
            .map_or(0, |avg| workers_for(avg, self.settings.target))
    }
}

/// Workers needed for `observed` at `target` each: ceil(observed / target).
fn workers_for(observed: f64, target: f64) -> u32 {
    let ratio = observed / target;
    let nearest = ratio.round();
    // Float error must not cost a worker: three workers each at 0.8 sum to 2.4000000000000004,
    // and 2.4000000000000004 / 0.8 is just above 3.
    let ratio = if (ratio - nearest).abs() < 1e-9 {
        nearest
    } else {
        ratio.ceil()
    };
    // `as` saturates (and maps NaN to 0), so a zero or invalid target cannot panic.
    ratio.max(0.0) as u32
}

/// `n` within `[min, max]`; unlike `u32::clamp` it does not panic when `min > max`.
fn clamp(n: u32, min: u32, max: u32) -> u32 {
    n.max(min).min(max)
}

#[cfg(test)]
mod tests;
