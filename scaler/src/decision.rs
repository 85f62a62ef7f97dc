//! What the policy decided and why: [`Decision`], [`Reason`], [`Direction`].

use std::fmt;

/// The policy's answer: how many workers the endpoint should run, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Workers the endpoint should run.
    pub desired: u32,
    /// What the policy wanted before this decision.
    pub previous: u32,
    /// The rule that settled `desired`.
    pub reason: Reason,
    /// The metric averaged over the stable window, summed over the endpoint; `None` before
    /// any sample.
    pub stable: Option<f64>,
    /// The metric averaged over the panic window, summed over the endpoint.
    pub panic: Option<f64>,
    /// Whether the policy is in panic mode (no scale-down).
    pub panicking: bool,
}

impl Decision {
    /// Which way the worker count moves, if it moves: the label of
    /// `portico_scale_events_total{direction}`.
    pub fn direction(&self) -> Option<Direction> {
        match self.desired.cmp(&self.previous) {
            std::cmp::Ordering::Greater => Some(Direction::Up),
            std::cmp::Ordering::Less => Some(Direction::Down),
            std::cmp::Ordering::Equal => None,
        }
    }
}

impl fmt::Display for Decision {
    /// One log line: `2 -> 3 workers: metric above target (stable 25.00, panic 31.00)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} workers: {}",
            self.previous, self.desired, self.reason
        )?;
        if let (Some(stable), Some(panic)) = (self.stable, self.panic) {
            write!(f, " (stable {stable:.2}, panic {panic:.2})")?;
        }
        if self.panicking {
            f.write_str(" [panicking]")?;
        }
        Ok(())
    }
}

/// Which way a decision moves the worker count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// More workers.
    Up,
    /// Fewer workers.
    Down,
}

impl Direction {
    /// `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// The rule that settled a [`Decision`], from the strongest override to the plain metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The endpoint is stopped: zero workers until started.
    Stopped,
    /// The worker count is pinned by hand (autoscaling paused).
    Pinned,
    /// `min_workers == max_workers`: autoscaling is disabled.
    Disabled,
    /// Demand found the endpoint at zero: one worker at once.
    WakeOnDemand,
    /// The panic window demands at least `panic_threshold` × the ready workers: scale up at
    /// once, never down.
    Panic,
    /// The stable-window average asks for more workers.
    AboveTarget,
    /// The stable-window average asks for fewer workers: one step down.
    BelowTarget,
    /// The stable-window average asks for the current count.
    OnTarget,
    /// The average asks for fewer workers, but a higher count was asked for within the
    /// stable window: the count is held so load that oscillates does not flap it.
    ScaleDownDelay,
    /// No metric value within the stable window (e.g. a custom metric not scraped yet): the
    /// count is kept.
    NoData,
    /// Nothing in flight, arriving or queued for `idle_timeout_seconds`: down to
    /// `min_workers` at once.
    Idle,
    /// Idle, `min_workers = 0` and the initial cooldown over: zero workers.
    ScaleToZeroIdle,
    /// The metric asks for no worker, but the endpoint has not been idle for
    /// `idle_timeout_seconds`: one worker stays.
    NotIdle,
    /// Idle, but `initial_cooldown_seconds` have not passed since the last wake: one worker
    /// stays.
    Cooldown,
    /// Async jobs are queued: at least one worker.
    QueueKeepsOne,
    /// Raised to `min_workers`.
    MinWorkers,
    /// Capped at `max_workers`.
    MaxWorkers,
}

impl Reason {
    /// A stable snake_case name for metrics labels and events, e.g. `scale_to_zero_idle`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Stopped => "stopped",
            Reason::Pinned => "pinned",
            Reason::Disabled => "disabled",
            Reason::WakeOnDemand => "wake_on_demand",
            Reason::Panic => "panic",
            Reason::AboveTarget => "above_target",
            Reason::BelowTarget => "below_target",
            Reason::OnTarget => "on_target",
            Reason::ScaleDownDelay => "scale_down_delay",
            Reason::NoData => "no_data",
            Reason::Idle => "idle",
            Reason::ScaleToZeroIdle => "scale_to_zero_idle",
            Reason::NotIdle => "not_idle",
            Reason::Cooldown => "cooldown",
            Reason::QueueKeepsOne => "queue_keeps_one",
            Reason::MinWorkers => "min_workers",
            Reason::MaxWorkers => "max_workers",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Stopped => "endpoint stopped",
            Reason::Pinned => "pinned by hand",
            Reason::Disabled => "autoscaling disabled (min_workers = max_workers)",
            Reason::WakeOnDemand => "woken by demand",
            Reason::Panic => "panic: burst above the panic threshold",
            Reason::AboveTarget => "metric above target",
            Reason::BelowTarget => "metric below target",
            Reason::OnTarget => "metric on target",
            Reason::ScaleDownDelay => "scale-down delayed by the stable window",
            Reason::NoData => "no metric data",
            Reason::Idle => "idle",
            Reason::ScaleToZeroIdle => "idle: scale to zero",
            Reason::NotIdle => "not idle long enough to scale to zero",
            Reason::Cooldown => "initial cooldown after a wake",
            Reason::QueueKeepsOne => "async queue not empty",
            Reason::MinWorkers => "min_workers",
            Reason::MaxWorkers => "max_workers",
        })
    }
}
