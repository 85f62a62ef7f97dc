//! The rules of DESIGN.md §4 on virtual time. Unless a test says otherwise: one tick per
//! second, the policy created at t = 0, ready workers following the previous decision at
//! once, and the defaults of `ScalingSettings` (target 10, stable window 60 s, panic window
//! 6 s, threshold 2.0, idle timeout 60 s, initial cooldown 300 s).

use super::*;
use crate::Direction;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `in_flight` requests, nothing queued.
fn load(in_flight: u32) -> Sample {
    Sample {
        in_flight,
        ..Sample::default()
    }
}

fn settings(min_workers: u32, max_workers: u32) -> ScalingSettings {
    ScalingSettings {
        min_workers,
        max_workers,
        ..ScalingSettings::default()
    }
}

/// An endpoint on virtual time with a record of every decision, indexed by tick.
struct Sim {
    policy: Policy,
    now: Duration,
    tick: Duration,
    ready: u32,
    trace: Vec<(Duration, Decision)>,
}

impl Sim {
    fn new(settings: ScalingSettings) -> Sim {
        Sim::with_tick(settings, secs(1))
    }

    fn with_tick(settings: ScalingSettings, tick: Duration) -> Sim {
        let policy = Policy::new(settings, Duration::ZERO);
        Sim {
            ready: policy.desired(),
            policy,
            now: Duration::ZERO,
            tick,
            trace: Vec::new(),
        }
    }

    /// Ticks until `until` seconds (inclusive), feeding `sample(t)` at each tick `t`.
    fn run(&mut self, until: u64, mut sample: impl FnMut(u64) -> Sample) {
        while self.now + self.tick <= secs(until) {
            self.now += self.tick;
            let s = Sample {
                ready: self.ready,
                ..sample(self.now.as_secs())
            };
            let decision = self.policy.tick(self.now, s);
            self.ready = decision.desired;
            self.trace.push((self.now, decision));
        }
    }

    /// Makes an out-of-tick call (wake, pin, stop, ...) and applies its decision as the
    /// actuator would.
    fn apply(&mut self, call: impl FnOnce(&mut Policy) -> Decision) -> Decision {
        let decision = call(&mut self.policy);
        self.ready = decision.desired;
        decision
    }

    /// The decision of the tick at `t` seconds.
    fn at(&self, t: u64) -> Decision {
        self.trace
            .iter()
            .find(|(now, _)| *now == secs(t))
            .map(|(_, d)| *d)
            .unwrap_or_else(|| panic!("no tick at {t}s"))
    }

    fn desired(&self, t: u64) -> u32 {
        self.at(t).desired
    }

    /// Desired counts of the ticks from `from` to `to` seconds, inclusive.
    fn desired_between(&self, from: u64, to: u64) -> Vec<u32> {
        (from..=to).map(|t| self.desired(t)).collect()
    }
}

/// A step from 10 to 30 in flight scales 1 → 3 within four seconds through panic mode, and
/// the step back down waits until no tick of the last stable window asked for more.
#[test]
fn step_load() {
    let mut sim = Sim::new(settings(0, 8));
    sim.run(480, |t| match t {
        121..=300 => load(30),
        _ => load(10),
    });
    assert_eq!(sim.at(1).reason, Reason::AboveTarget);
    assert_eq!(sim.desired_between(1, 120), vec![1; 120]);
    // (5 × 10 + 30) / 6 in the panic window asks for 2 = 2.0 × 1 ready: panic.
    assert_eq!((sim.desired(121), sim.at(121).reason), (2, Reason::Panic));
    assert_eq!(sim.desired_between(122, 124), [2, 2, 3]);
    assert!(sim.at(180).panicking);
    assert!(
        !sim.at(181).panicking,
        "a stable window without the condition ends panic"
    );
    assert_eq!(
        (sim.desired(181), sim.at(181).reason),
        (3, Reason::OnTarget)
    );
    assert_eq!(sim.desired_between(124, 300), vec![3; 177]);
    // Down: the average asks for 2 from t = 330 (1200 / 60 = 20), but t = 329 still asked
    // for 3, so 3 holds until 329 leaves the window.
    assert_eq!(sim.at(330).stable, Some(20.0));
    assert_eq!(sim.desired(388), 3);
    assert_eq!(sim.at(388).reason, Reason::ScaleDownDelay);
    assert_eq!(
        (sim.desired(389), sim.at(389).reason),
        (2, Reason::BelowTarget)
    );
    assert_eq!(sim.at(389).direction(), Some(Direction::Down));
    assert_eq!(sim.desired(418), 2);
    assert_eq!(sim.desired(419), 1);
    assert_eq!(sim.desired_between(419, 480), vec![1; 62]);
}

/// A ramp of one more request per second is followed one worker per 10 requests as it
/// comes (panic mode), never stepping back, and settles at the top.
#[test]
fn ramp() {
    let mut sim = Sim::new(settings(0, 10));
    sim.run(180, |t| load(t.min(40) as u32));
    let desired = sim.desired_between(1, 180);
    assert!(desired.windows(2).all(|w| w[0] <= w[1]), "{desired:?}");
    assert_eq!(sim.desired(12), 1);
    // Panic-window average 10.5 at t = 13: two workers.
    assert_eq!((sim.desired(13), sim.at(13).reason), (2, Reason::Panic));
    assert_eq!(sim.desired(22), 2);
    assert_eq!(sim.desired(23), 3);
    assert_eq!(sim.desired(32), 3);
    assert_eq!(sim.desired(33), 4);
    assert_eq!(
        (sim.desired(180), sim.at(180).reason),
        (4, Reason::OnTarget)
    );
}

/// A 5 s burst to 60 in flight on one worker panics: up every tick to 6 workers, held for a
/// stable window after the burst, then down one worker per tick to what the window asks.
#[test]
fn burst_panics_and_holds() {
    let mut sim = Sim::new(settings(0, 8));
    sim.run(300, |t| match t {
        121..=125 => load(60),
        _ => load(10),
    });
    assert_eq!(sim.desired(120), 1);
    assert!(!sim.at(120).panicking);
    assert_eq!(sim.desired_between(121, 126), [2, 3, 4, 5, 6, 6]);
    assert!((121..=126).all(|t| sim.at(t).reason == Reason::Panic));
    // The load is back to 10 from t = 126, and the panic window asks for 5 at t = 127:
    // never scale down while panicking.
    assert_eq!(sim.desired_between(126, 180), vec![6; 55]);
    assert!(sim.at(180).panicking);
    // The condition held only at t = 121 (at 122, 3 asked of 2 ready is below 2.0 × 2).
    assert!(!sim.at(181).panicking);
    assert_eq!(sim.desired_between(181, 185), [5, 4, 3, 2, 2]);
    assert_eq!(sim.at(181).reason, Reason::BelowTarget);
    assert_eq!(
        sim.at(181).to_string(),
        "6 -> 5 workers: metric below target (stable 13.33, panic 10.00)"
    );
    // The last tick asking for 2 was t = 184 (its window still held a second of the burst).
    assert_eq!(sim.desired(243), 2);
    assert_eq!(sim.desired(244), 1);
}

/// Load swinging between 12 and 28 every 9 s (mean 20: on the edge between 2 and 3 workers)
/// changes direction at most once per stable window; the count settles at 3 and stays.
#[test]
fn sawtooth_does_not_flap() {
    let mut sim = Sim::new(settings(0, 8));
    sim.run(900, |t| load(12 + 2 * (t % 9) as u32));
    // The averaged window moves between 19.7 and 20.3: it asks for 2 and 3 in turn.
    let asked: Vec<_> = (120..=180)
        .map(|t| workers_for(sim.at(t).stable.unwrap_or_default(), 10.0))
        .collect();
    assert!(asked.contains(&2) && asked.contains(&3), "{asked:?}");

    let moves: Vec<_> = sim
        .trace
        .iter()
        .filter_map(|(now, d)| d.direction().map(|dir| (now.as_secs(), dir)))
        .collect();
    let changes: Vec<u64> = moves
        .windows(2)
        .filter(|w| w[0].1 != w[1].1)
        .map(|w| w[1].0)
        .collect();
    for pair in changes.windows(2) {
        assert!(pair[1] - pair[0] >= 60, "direction changes at {changes:?}");
    }
    assert_eq!(sim.desired_between(1, 6), [2; 6]);
    assert_eq!(sim.desired_between(7, 900), vec![3; 894]);
}

/// Once nothing is in flight for idle_timeout_seconds, the count drops from 2 straight to
/// zero (no one-step rule), not a tick earlier.
#[test]
fn idle_goes_to_zero() {
    let mut sim = Sim::new(ScalingSettings {
        initial_cooldown: secs(30),
        ..settings(0, 4)
    });
    sim.run(200, |t| if t <= 30 { load(20) } else { load(0) });
    assert_eq!(sim.desired(30), 2);
    // Last demand at t = 30; the stable window still asks for 2 until it is idle.
    assert_eq!(sim.desired(89), 2);
    assert_eq!(sim.at(89).reason, Reason::ScaleDownDelay);
    assert_eq!(sim.desired(90), 0);
    assert_eq!(sim.at(90).reason, Reason::ScaleToZeroIdle);
    assert_eq!(sim.desired_between(90, 200), vec![0; 111]);
}

/// With an idle timeout shorter than the stable window, zero comes after the idle timeout,
/// and the average still holding old load does not wake the endpoint again.
#[test]
fn idle_timeout_shorter_than_window() {
    let mut sim = Sim::new(ScalingSettings {
        idle_timeout: secs(10),
        initial_cooldown: Duration::ZERO,
        ..settings(0, 4)
    });
    sim.run(120, |t| if t <= 30 { load(10) } else { load(0) });
    assert_eq!(sim.desired(39), 1);
    assert_eq!(
        (sim.desired(40), sim.at(40).reason),
        (0, Reason::ScaleToZeroIdle)
    );
    assert!(sim.at(60).stable.is_some_and(|avg| avg > 0.0));
    assert_eq!(sim.desired_between(40, 120), vec![0; 81]);
}

/// Idle with min_workers > 0 drops straight to min_workers, but not while panicking.
#[test]
fn idle_drops_to_min_workers_after_panic() {
    let mut sim = Sim::new(ScalingSettings {
        idle_timeout: secs(10),
        ..settings(1, 4)
    });
    sim.run(100, |t| if t <= 30 { load(30) } else { load(0) });
    // 30 in flight on 1 ready worker: panic at t = 1, which lasts until t = 61.
    assert_eq!((sim.desired(1), sim.at(1).reason), (3, Reason::Panic));
    assert_eq!(sim.desired(60), 3);
    assert_eq!(sim.at(60).reason, Reason::Panic);
    assert_eq!((sim.desired(61), sim.at(61).reason), (1, Reason::Idle));
    assert_eq!(sim.desired_between(61, 100), vec![1; 40]);
}

/// A wake at zero asks for one worker at once; the worker then stays for
/// initial_cooldown_seconds after that wake even when idle long before, and a wake while
/// awake neither adds a worker nor restarts the cooldown.
#[test]
fn wake_then_cooldown() {
    let mut sim = Sim::new(settings(0, 4));
    sim.run(9, |_| load(0));
    assert_eq!(
        (sim.desired(9), sim.at(9).reason),
        (0, Reason::ScaleToZeroIdle)
    );
    let woke = sim.apply(|p| p.wake(secs(10)));
    assert_eq!((woke.previous, woke.desired), (0, 1));
    assert_eq!(woke.reason, Reason::WakeOnDemand);
    sim.run(14, |_| load(1));
    sim.run(200, |_| load(0));
    assert_eq!(sim.desired(73), 1);
    // Idle from t = 74 (last demand at 14), but the cooldown runs until 310.
    assert_eq!((sim.desired(74), sim.at(74).reason), (1, Reason::Cooldown));
    let again = sim.apply(|p| p.wake(secs(200)));
    assert_eq!((again.previous, again.desired), (1, 1));
    assert_eq!(again.reason, Reason::Cooldown);
    sim.run(320, |_| load(0));
    // The wake at 200 restarted the idle clock only.
    assert_eq!((sim.desired(259), sim.at(259).reason), (1, Reason::NotIdle));
    assert_eq!(
        (sim.desired(260), sim.at(260).reason),
        (1, Reason::Cooldown)
    );
    assert_eq!(sim.desired(309), 1);
    assert_eq!(
        (sim.desired(310), sim.at(310).reason),
        (0, Reason::ScaleToZeroIdle)
    );
    assert_eq!(sim.desired(320), 0);
}

/// Queued async jobs wake an endpoint at zero on the next tick and keep one worker however
/// long they wait; once the queue empties the endpoint goes back to zero after the idle
/// timeout.
#[test]
fn queue_keeps_one_worker() {
    let mut sim = Sim::new(ScalingSettings {
        idle_timeout: secs(10),
        initial_cooldown: Duration::ZERO,
        ..settings(0, 4)
    });
    let queued = Sample {
        queue_depth: 3,
        ..Sample::default()
    };
    sim.run(150, |t| if t <= 100 { queued } else { load(0) });
    assert_eq!(
        (sim.desired(1), sim.at(1).reason),
        (1, Reason::QueueKeepsOne)
    );
    assert!((1..=100).all(|t| sim.at(t).reason == Reason::QueueKeepsOne));
    assert_eq!(sim.desired_between(1, 100), vec![1; 100]);
    assert_eq!((sim.desired(109), sim.at(109).reason), (1, Reason::NotIdle));
    assert_eq!(sim.desired(110), 0);
    assert_eq!(sim.desired_between(110, 150), vec![0; 41]);
}

/// `vllm:gpu_cache_usage_perc` with target 0.8: the sum of the ready workers' ratios over
/// 0.8 gives the count, and three workers each reporting exactly 0.8 (summing to
/// 2.4000000000000004 in floating point) need exactly three, not four.
#[test]
fn ratio_metric() {
    let mut sim = Sim::new(ScalingSettings {
        metric: Metric::Custom("vllm:gpu_cache_usage_perc".into()),
        target: 0.8,
        ..settings(1, 8)
    });
    // Requests whose KV cache fills 2.4 workers: each ready worker reports its share,
    // rounded to the percent as vLLM's gauge would be, capped at 100 %.
    let mut ready = 1;
    let usage = |ready: u32| f64::from((240 / ready).min(100)) / 100.0;
    for t in 1..=300 {
        sim.run(t, |_| Sample {
            in_flight: 5,
            custom: Some((0..ready).map(|_| usage(ready)).sum()),
            ..Sample::default()
        });
        ready = sim.desired(t);
    }
    assert_eq!(usage(3) * 3.0, 2.4000000000000004);
    // 1 worker full (1.0 / 0.8 = 1.25): 2; 2 full (2.5): 3 as the average catches up.
    assert_eq!(sim.desired_between(1, 3), [2, 2, 3]);
    assert_eq!(
        (sim.desired(300), sim.at(300).reason),
        (3, Reason::OnTarget)
    );
    assert_eq!(sim.desired_between(3, 300), vec![3; 298]);

    // Each of three workers at 0.9: 2.7 / 0.8 = 3.375 → 4.
    for t in 301..=310 {
        sim.run(t, |_| Sample {
            in_flight: 5,
            custom: Some(0.9 + 0.9 + 0.9),
            ..Sample::default()
        });
    }
    assert_eq!(sim.at(310).stable.map(|s| workers_for(s, 0.8)), Some(4));
}

/// rps counts arrivals per second of elapsed time, whatever the tick length: 5 arrivals per
/// half-second tick is 10 rps, exactly 2 workers at target 5, and 11 per 1 s tick needs 3.
#[test]
fn rps_metric() {
    let rps = ScalingSettings {
        metric: Metric::Rps,
        target: 5.0,
        ..settings(0, 8)
    };
    let arrivals = |n| Sample {
        arrivals: n,
        ..Sample::default()
    };
    let mut half = Sim::with_tick(rps.clone(), Duration::from_millis(500));
    half.run(120, |_| arrivals(5));
    assert!(
        half.trace.iter().all(|(_, d)| d.desired == 2),
        "{:?}",
        half.trace
    );
    assert_eq!(half.at(120).stable, Some(10.0));

    let mut whole = Sim::new(rps.clone());
    whole.run(120, |_| arrivals(11));
    assert_eq!(whole.desired_between(1, 120), vec![3; 120]);

    // Arrivals on a tick that takes no time count with the next tick: 20 in 2 s.
    let mut policy = Policy::new(rps, Duration::ZERO);
    policy.tick(secs(1), arrivals(10));
    policy.tick(secs(1), arrivals(10));
    let d = policy.tick(secs(2), arrivals(0));
    assert_eq!(d.stable, Some(10.0));
    assert_eq!(d.desired, 2);
}

/// A pin holds its count against any load, queue or wake until unpinned, and is clamped to
/// [min_workers, max_workers]; unpinning hands the count back to the autoscaler.
#[test]
fn manual_pin() {
    let mut sim = Sim::new(settings(0, 4));
    let pinned = sim.apply(|p| p.pin(Duration::ZERO, 3));
    assert_eq!((pinned.previous, pinned.desired), (0, 3));
    assert_eq!(pinned.reason, Reason::Pinned);
    assert_eq!(sim.policy.mode(), Mode::Pinned(3));
    sim.run(60, |t| if t <= 30 { load(0) } else { load(80) });
    assert_eq!(sim.desired_between(1, 60), vec![3; 60]);
    assert!((1..=60).all(|t| sim.at(t).reason == Reason::Pinned));

    // 80 in flight: the autoscaler, resumed, wants 8 and is capped at 4.
    let auto = sim.apply(|p| p.unpin(secs(60)));
    assert_eq!(sim.policy.mode(), Mode::Auto);
    assert_eq!((auto.desired, auto.reason), (4, Reason::MaxWorkers));
    assert!(auto.panicking);

    assert_eq!(sim.policy.pin(secs(60), 20).desired, 4);
    assert_eq!(sim.apply(|p| p.pin(secs(60), 0)).desired, 0);
    sim.run(90, |_| Sample {
        in_flight: 10,
        queue_depth: 5,
        ..Sample::default()
    });
    assert_eq!(sim.desired_between(61, 90), vec![0; 30]);
    assert_eq!(sim.policy.wake(secs(90)).desired, 0);
    let back = sim.policy.unpin(secs(90));
    assert_eq!(back.direction(), Some(Direction::Up));
}

/// Stop forces zero whatever the demand, min_workers, a wake or a pin; start resumes
/// autoscaling from the current demand.
#[test]
fn stop_and_start() {
    let mut sim = Sim::new(settings(1, 4));
    sim.run(30, |_| load(20));
    assert_eq!(sim.desired(30), 2);
    let stopped = sim.apply(|p| p.stop(secs(30)));
    assert_eq!((stopped.desired, stopped.reason), (0, Reason::Stopped));
    sim.run(60, |_| Sample {
        in_flight: 20,
        queue_depth: 3,
        ..Sample::default()
    });
    assert_eq!(sim.desired_between(31, 60), vec![0; 30]);
    assert_eq!(sim.policy.wake(secs(60)).reason, Reason::Stopped);
    assert_eq!(sim.policy.pin(secs(60), 2).desired, 0);
    assert_eq!(sim.policy.mode(), Mode::Stopped);

    let started = sim.apply(|p| p.start(secs(60)));
    assert_eq!(sim.policy.mode(), Mode::Auto);
    assert_eq!((started.previous, started.desired), (0, 2));

    // Without demand, start brings back min_workers.
    let mut idle = Sim::new(settings(1, 4));
    idle.run(10, |_| load(0));
    assert_eq!(idle.policy.stop(secs(10)).desired, 0);
    let started = idle.policy.start(secs(10));
    assert_eq!((started.desired, started.reason), (1, Reason::MinWorkers));
}

/// min_workers == max_workers disables autoscaling: that count whatever the demand, idle
/// time or wakes; only stop overrides it.
#[test]
fn min_equals_max_disables_autoscaling() {
    let mut sim = Sim::new(settings(2, 2));
    sim.run(300, |t| match t {
        1..=60 => load(100),
        61..=120 => Sample {
            queue_depth: 9,
            ..Sample::default()
        },
        _ => load(0),
    });
    assert_eq!(sim.desired_between(1, 300), vec![2; 300]);
    assert!(sim.trace.iter().all(|(_, d)| d.reason == Reason::Disabled));
    assert_eq!(sim.policy.wake(secs(300)).desired, 2);
    assert_eq!(sim.policy.stop(secs(300)).desired, 0);
    assert_eq!(sim.policy.start(secs(300)).desired, 2);
}

/// Without metric data (a custom metric not scraped yet) the count is kept, not dropped.
#[test]
fn no_data_keeps_the_count() {
    let mut sim = Sim::new(ScalingSettings {
        metric: Metric::Custom("vllm:num_requests_waiting".into()),
        target: 4.0,
        ..settings(1, 4)
    });
    sim.run(30, |_| load(3));
    assert_eq!((sim.desired(30), sim.at(30).reason), (1, Reason::NoData));
    sim.run(31, |_| Sample {
        in_flight: 3,
        custom: Some(9.0),
        ..Sample::default()
    });
    assert_eq!((sim.desired(31), sim.at(31).reason), (3, Reason::Panic));
}

/// A hot settings change applies at once: a lower max_workers caps the count.
#[test]
fn settings_change_applies_at_once() {
    let mut sim = Sim::new(settings(0, 8));
    sim.run(60, |_| load(40));
    assert_eq!(sim.desired(60), 4);
    let capped = sim.policy.set_settings(secs(60), settings(0, 2));
    assert_eq!((capped.desired, capped.reason), (2, Reason::MaxWorkers));
}

/// ceil(observed / target) ignores float noise at exact multiples only.
#[test]
fn workers_for_rounds_up() {
    assert_eq!(workers_for(0.0, 10.0), 0);
    assert_eq!(workers_for(0.01, 10.0), 1);
    assert_eq!(workers_for(20.0, 10.0), 2);
    assert_eq!(workers_for(20.001, 10.0), 3);
    assert_eq!(workers_for(0.8 + 0.8 + 0.8, 0.8), 3);
    assert_eq!(workers_for(f64::NAN, 10.0), 0);
    assert_eq!(workers_for(1.0, 0.0), u32::MAX);
}
