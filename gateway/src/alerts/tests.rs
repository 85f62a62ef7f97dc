//! Tests of the alert state machine on virtual time, the evaluator over readings, restart
//! counting, and notification text.

use std::time::{Duration, Instant, UNIX_EPOCH};

use super::*;
use crate::config::{AlertChannel, AlertMetric, AlertOperator, AlertScope};

fn start() -> Now {
    Now {
        instant: Instant::now(),
        wall: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn rule(name: &str, metric: AlertMetric, operator: AlertOperator, threshold: f64) -> AlertRule {
    AlertRule {
        name: name.into(),
        endpoint: AlertScope::Each,
        metric,
        operator,
        threshold,
        for_: secs(10),
        notify: vec![AlertChannel::Webhook],
        min_requests: 10,
    }
}

fn alerts(rules: Vec<AlertRule>) -> Alerts {
    Alerts {
        rules,
        ..Alerts::default()
    }
}

fn errors(requests: u64, error_rate: f64) -> Reading {
    Reading {
        requests,
        error_rate,
        ..Reading::default()
    }
}

/// A condition that holds fires exactly once after `for_seconds`, and resolves exactly
/// once when it stops holding; no notification in between however many evaluations.
#[test]
fn fires_once_after_hold_and_resolves_once() {
    let t0 = start();
    let mut tracker = Tracker::new();
    let hold = secs(10);
    assert_eq!(tracker.observe(Some(1.0), true, hold, t0), None);
    assert_eq!(tracker.phase(), Phase::Pending);
    assert_eq!(
        tracker.observe(Some(1.0), true, hold, t0.after(secs(5))),
        None
    );
    assert_eq!(
        tracker.observe(Some(1.0), true, hold, t0.after(secs(9))),
        None
    );
    assert_eq!(
        tracker.observe(Some(1.0), true, hold, t0.after(secs(10))),
        Some(Transition::Fired { since: t0.wall })
    );
    assert_eq!(tracker.phase(), Phase::Firing);
    assert_eq!(tracker.since(), Some(t0.after(secs(10)).wall));
    for s in 11..100 {
        assert_eq!(
            tracker.observe(Some(2.0), true, hold, t0.after(secs(s))),
            None
        );
    }
    assert_eq!(tracker.last_notified(), Some(t0.after(secs(10)).wall));
    assert_eq!(
        tracker.observe(Some(0.0), false, hold, t0.after(secs(100))),
        Some(Transition::Resolved { since: t0.wall })
    );
    assert_eq!(tracker.phase(), Phase::Ok);
    assert_eq!(tracker.value(), Some(0.0));
    assert_eq!(
        tracker.observe(Some(0.0), false, hold, t0.after(secs(101))),
        None
    );
    assert_eq!(tracker.last_notified(), Some(t0.after(secs(100)).wall));
}

/// A condition that flaps inside `for_seconds` never fires: each clear restarts the wait.
#[test]
fn flapping_inside_the_hold_does_not_fire() {
    let t0 = start();
    let mut tracker = Tracker::new();
    let hold = secs(10);
    for cycle in 0..20 {
        let base = t0.after(secs(cycle * 8));
        assert_eq!(tracker.observe(Some(1.0), true, hold, base), None);
        assert_eq!(
            tracker.observe(Some(1.0), true, hold, base.after(secs(6))),
            None
        );
        assert_eq!(tracker.phase(), Phase::Pending);
        assert_eq!(
            tracker.observe(Some(0.0), false, hold, base.after(secs(7))),
            None
        );
        assert_eq!(tracker.phase(), Phase::Ok);
    }
    assert_eq!(tracker.last_notified(), None);
}

/// With no hold the first breaching evaluation fires; a second episode notifies again.
#[test]
fn zero_hold_fires_at_once_and_each_episode_notifies() {
    let t0 = start();
    let mut tracker = Tracker::new();
    for episode in 0..3 {
        let at = t0.after(secs(episode * 10));
        assert_eq!(
            tracker.observe(Some(5.0), true, Duration::ZERO, at),
            Some(Transition::Fired { since: at.wall })
        );
        assert_eq!(
            tracker.observe(Some(0.0), false, Duration::ZERO, at.after(secs(1))),
            Some(Transition::Resolved { since: at.wall })
        );
    }
}

/// No data counts as not breaching: it clears a pending alert and resolves a firing one.
#[test]
fn no_data_does_not_breach() {
    let t0 = start();
    let mut tracker = Tracker::new();
    assert_eq!(tracker.observe(None, true, Duration::ZERO, t0), None);
    assert_eq!(tracker.phase(), Phase::Ok);
    tracker.observe(Some(1.0), true, Duration::ZERO, t0.after(secs(1)));
    assert_eq!(tracker.phase(), Phase::Firing);
    assert_eq!(
        tracker.observe(None, false, Duration::ZERO, t0.after(secs(2))),
        Some(Transition::Resolved {
            since: t0.after(secs(1)).wall
        })
    );
    assert_eq!(tracker.value(), None);
}

/// Every operator compares as written.
#[test]
fn operators_compare() {
    use AlertOperator::*;
    let cases = [
        (Above, 2.0, 1.0, true),
        (Above, 1.0, 1.0, false),
        (AtLeast, 1.0, 1.0, true),
        (AtLeast, 0.5, 1.0, false),
        (Below, 0.0, 1.0, true),
        (Below, 1.0, 1.0, false),
        (AtMost, 1.0, 1.0, true),
        (AtMost, 1.5, 1.0, false),
        (Equal, 3.0, 3.0, true),
        (Equal, 3.0, 2.0, false),
    ];
    for (operator, value, threshold, expected) in cases {
        assert_eq!(
            operator.holds(value, threshold),
            expected,
            "{value} {} {threshold}",
            operator.as_str()
        );
    }
}

/// Each metric's value comes from its field; error_rate needs `min_requests`.
#[test]
fn reading_values_per_metric() {
    let reading = Reading {
        requests: 9,
        error_rate: 1.0,
        p95_ms: Some(250.0),
        pending: 3,
        async_queue: Some(7),
        ready_workers: 2,
        restarts: 4,
    };
    let value = |metric| reading.value(&rule("r", metric, AlertOperator::Above, 0.0));
    // One failed request of nine does not page: fewer than min_requests (10).
    assert_eq!(value(AlertMetric::ErrorRate), None);
    assert_eq!(
        Reading {
            requests: 10,
            ..reading.clone()
        }
        .value(&rule(
            "r",
            AlertMetric::ErrorRate,
            AlertOperator::Above,
            0.0
        )),
        Some(1.0)
    );
    assert_eq!(value(AlertMetric::P95LatencyMs), Some(250.0));
    assert_eq!(value(AlertMetric::PendingRequests), Some(3.0));
    assert_eq!(value(AlertMetric::AsyncQueueDepth), Some(7.0));
    assert_eq!(value(AlertMetric::ReadyWorkers), Some(2.0));
    assert_eq!(value(AlertMetric::WorkerRestarts), Some(4.0));
    assert_eq!(
        Reading::default().value(&rule(
            "r",
            AlertMetric::P95LatencyMs,
            AlertOperator::Above,
            0.0
        )),
        None
    );
}

/// The evaluator keeps one state per (rule, endpoint), notifies each pair once per
/// episode, and skips `async_queue_depth` on endpoints without a queue.
#[test]
fn evaluator_tracks_each_endpoint_separately() {
    let mut evaluator = Evaluator::new(&alerts(vec![
        rule("errors", AlertMetric::ErrorRate, AlertOperator::Above, 0.5),
        rule(
            "queue",
            AlertMetric::AsyncQueueDepth,
            AlertOperator::Above,
            100.0,
        ),
    ]));
    let t0 = start();
    let readings = |a: f64, b: f64| {
        vec![
            ("a".to_string(), errors(100, a)),
            (
                "b".to_string(),
                Reading {
                    async_queue: Some(0),
                    ..errors(100, b)
                },
            ),
        ]
    };
    assert!(evaluator.evaluate(&readings(0.9, 0.1), t0).is_empty());
    let pairs: Vec<(String, String)> = evaluator
        .entries
        .iter()
        .map(|e| (e.rule.name.clone(), e.endpoint.clone()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("errors".to_string(), "a".to_string()),
            ("errors".to_string(), "b".to_string()),
            ("queue".to_string(), "b".to_string()),
        ]
    );
    let fired = evaluator.evaluate(&readings(0.9, 0.1), t0.after(secs(10)));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].endpoint, "a");
    assert_eq!(fired[0].state, State::Firing);
    assert_eq!(fired[0].since, t0.wall);
    assert_eq!(fired[0].value, Some(0.9));
    assert_eq!(fired[0].channels, [AlertChannel::Webhook]);
    assert!(
        evaluator
            .evaluate(&readings(0.9, 0.1), t0.after(secs(20)))
            .is_empty()
    );
    let resolved = evaluator.evaluate(&readings(0.2, 0.1), t0.after(secs(30)));
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].state, State::Resolved);
    assert_eq!(resolved[0].time, t0.after(secs(30)).wall);

    let statuses: Vec<Value> = evaluator.entries.iter().map(Entry::to_json).collect();
    assert_eq!(statuses[0]["state"], "ok");
    assert_eq!(statuses[0]["value"], 0.2);
    assert_eq!(statuses[0]["for_seconds"], 10);
    assert_eq!(statuses[0]["operator"], ">");
    assert!(statuses[0]["last_notified"].is_string());
    assert_eq!(statuses[1]["since"], Value::Null);
}

/// A reload keeps the state of an unchanged rule, restarts a changed one and drops a
/// removed one, without notifying.
#[test]
fn replaced_rules_keep_or_reset_state() {
    let errors_rule = rule("errors", AlertMetric::ErrorRate, AlertOperator::Above, 0.5);
    let slow_rule = rule(
        "slow",
        AlertMetric::P95LatencyMs,
        AlertOperator::Above,
        100.0,
    );
    let mut evaluator = Evaluator::new(&alerts(vec![errors_rule.clone(), slow_rule.clone()]));
    let t0 = start();
    let reading = vec![(
        "a".to_string(),
        Reading {
            p95_ms: Some(500.0),
            ..errors(100, 0.9)
        },
    )];
    evaluator.evaluate(&reading, t0);
    assert_eq!(evaluator.evaluate(&reading, t0.after(secs(10))).len(), 2);

    let changed = AlertRule {
        threshold: 0.8,
        ..errors_rule
    };
    evaluator.replace(&alerts(vec![changed, slow_rule]));
    // Still breaching: the unchanged rule stays firing, the changed one waits anew.
    assert!(evaluator.evaluate(&reading, t0.after(secs(11))).is_empty());
    let phases: Vec<(&str, Phase)> = evaluator
        .entries
        .iter()
        .map(|e| (e.rule.name.as_str(), e.tracker.phase()))
        .collect();
    assert_eq!(
        phases,
        [("errors", Phase::Pending), ("slow", Phase::Firing)]
    );

    evaluator.replace(&alerts(Vec::new()));
    assert!(evaluator.evaluate(&reading, t0.after(secs(12))).is_empty());
    assert!(evaluator.entries.is_empty());
    assert!(!evaluator.watches("a"));
}

/// Restarts are counted from each replica's counter over the last five minutes; a new
/// replica reusing a number counts from its own start.
#[test]
fn restart_window_counts_recent_restarts() {
    let t0 = Instant::now();
    let mut window = RestartWindow::default();
    assert_eq!(window.observe(t0, &[(0, 0), (1, 0)]), 0);
    assert_eq!(window.observe(t0 + secs(10), &[(0, 2), (1, 0)]), 2);
    assert_eq!(window.observe(t0 + secs(20), &[(0, 2), (1, 1)]), 3);
    // Replica 0 was replaced by a fresh one (count back to 0), then it restarted once.
    assert_eq!(window.observe(t0 + secs(30), &[(0, 1), (1, 1)]), 4);
    assert_eq!(window.observe(t0 + secs(309), &[(0, 1), (1, 1)]), 4);
    assert_eq!(window.observe(t0 + secs(315), &[(0, 1), (1, 1)]), 2);
    assert_eq!(window.observe(t0 + secs(330), &[(0, 1), (1, 1)]), 0);
}

fn sample(state: State, value: Option<f64>) -> Notification {
    Notification {
        alert: "high-errors".into(),
        endpoint: "e1".into(),
        metric: AlertMetric::ErrorRate,
        operator: AlertOperator::Above,
        threshold: 0.5,
        value,
        state,
        since: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        time: UNIX_EPOCH + Duration::from_secs(1_800_000_030),
        channels: vec![AlertChannel::Webhook, AlertChannel::Email],
    }
}

/// Messages, the webhook JSON and the e-mail say what fired, where, with which value.
#[test]
fn notification_text_and_json() {
    let firing = sample(State::Firing, Some(0.8));
    assert_eq!(
        firing.message(),
        "[FIRING] high-errors on e1: error_rate is 0.8 (> 0.5) since 2027-01-15T08:00:00.000Z"
    );
    let resolved = sample(State::Resolved, None);
    assert_eq!(
        resolved.message(),
        "[RESOLVED] high-errors on e1: error_rate is no data, no longer > 0.5 \
         (held since 2027-01-15T08:00:00.000Z)"
    );
    let json = firing.to_json();
    assert_eq!(json["alert"], "high-errors");
    assert_eq!(json["endpoint"], "e1");
    assert_eq!(json["metric"], "error_rate");
    assert_eq!(json["operator"], ">");
    assert_eq!(json["threshold"], 0.5);
    assert_eq!(json["value"], 0.8);
    assert_eq!(json["state"], "firing");
    assert_eq!(json["since"], "2027-01-15T08:00:00.000Z");
    assert_eq!(json["time"], "2027-01-15T08:00:30.000Z");
    assert_eq!(json["message"], firing.message());
    assert_eq!(resolved.to_json()["value"], Value::Null);
    assert_eq!(firing.subject(), "[Portico FIRING] high-errors on e1");
    assert_eq!(resolved.subject(), "[Portico RESOLVED] high-errors on e1");
    let body = firing.body();
    assert!(body.starts_with(&firing.message()), "{body}");
    for line in [
        "condition: > 0.5",
        "value: 0.8",
        "state: firing",
        "endpoint: e1",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} missing in {body}");
    }
}

/// The e-mail goes from `[smtp].from` to every recipient with the subject and body.
#[test]
fn email_has_sender_recipients_and_text() {
    let smtp = crate::config::Smtp {
        host: "mail.example.com".into(),
        port: 587,
        from: "Portico <alerts@example.com>".parse().unwrap(),
        credentials: None,
        tls: crate::config::SmtpTls::Required,
        timeout: secs(10),
    };
    let to = [
        "a@example.com".parse().unwrap(),
        "b@example.com".parse().unwrap(),
    ];
    let message = notify::email(&smtp, &to, &sample(State::Firing, Some(0.8))).unwrap();
    let text = String::from_utf8(message.formatted()).unwrap();
    assert!(
        text.contains("From: Portico <alerts@example.com>"),
        "{text}"
    );
    assert!(text.contains("To: a@example.com, b@example.com"), "{text}");
    assert!(
        text.contains("Subject: [Portico FIRING] high-errors on e1"),
        "{text}"
    );
    assert!(text.contains("state: firing"), "{text}");
}

/// Numbers are shown with at most four decimals and no trailing zeros.
#[test]
fn numbers_for_people() {
    assert_eq!(number(0.8), "0.8");
    assert_eq!(number(1200.0), "1200");
    assert_eq!(number(1.0 / 3.0), "0.3333");
    assert_eq!(number(0.0), "0");
    assert_eq!(number(-0.00001), "0");
}
