//! Alerts: `[[alert]]` rules evaluated over endpoint metrics on the control runtime, each
//! (rule, endpoint) pair with its own state machine, notified by webhook and e-mail once
//! when it fires and once when it resolves. `docs/alerts.md` is the operator's guide.
//!
//! Layout:
//! - `state`: the pure state machine (ok → pending → firing → ok) on an injected clock.
//! - `reading`: what is read from an endpoint, and each metric's value.
//! - `notify`: notification text and JSON, and their delivery with retries.
//!
//! [`start`] returns the [`AlertBoard`] that the admin API reads (`GET /admin/alerts`) and
//! that a reload updates ([`AlertBoard::replace_rules`]).

mod notify;
mod reading;
mod state;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::accesslog::Rfc3339;
use crate::config::{AlertRule, Alerts, Config};
use crate::endpoint::Endpoint;
use crate::pipeline::Shared;

pub use notify::{Notification, State, number};
pub use reading::{RESTART_WINDOW, Reading, RestartWindow, read};
pub use state::{Now, Phase, Tracker, Transition};

/// The alerts of a running daemon: the rules in force, the state of each (rule, endpoint)
/// pair, and the notification queues.
#[derive(Debug)]
pub struct AlertBoard {
    evaluator: Mutex<Evaluator>,
    notifier: notify::Notifier,
}

/// Starts evaluating the rules of `config` over the endpoints of `shared` every
/// `[alerts].evaluate_every_seconds`, on the current (control) runtime, until `stop` turns
/// true. Evaluation reads counters only and never waits for a notification to be delivered.
pub fn start(
    shared: Arc<Shared>,
    config: &Config,
    mut stop: watch::Receiver<bool>,
) -> Arc<AlertBoard> {
    describe();
    let board = Arc::new(AlertBoard {
        evaluator: Mutex::new(Evaluator::new(&config.alerts)),
        notifier: notify::Notifier::start(&config.alerts),
    });
    let evaluating = Arc::clone(&board);
    tokio::spawn(async move {
        loop {
            let every = evaluating.evaluate_every();
            // Routes are loaded anew each time: a reload may have replaced endpoints.
            let routes = shared.routes.load();
            evaluating.evaluate_endpoints(routes.endpoints(), Now::current());
            drop(routes);
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
        }
    });
    board
}

fn describe() {
    metrics::describe_gauge!(
        "portico_alert_firing",
        "1 while the alert fires on the endpoint, else 0."
    );
    metrics::describe_counter!(
        "portico_alert_notifications_total",
        "Alert notifications by channel and outcome (sent, failed after retries, dropped)."
    );
}

impl AlertBoard {
    /// Takes the rules and channels of `config` (a reload). A pair whose rule is unchanged
    /// keeps its state; a changed or removed rule starts over (or goes) without notifying.
    pub fn replace_rules(&self, config: &Config) {
        self.lock().replace(&config.alerts);
        self.notifier.replace(&config.alerts);
    }

    /// Time between evaluations.
    pub fn evaluate_every(&self) -> Duration {
        self.lock().evaluate_every
    }

    /// Reads the endpoints the rules watch, advances every state machine to `now` and
    /// queues the notifications that result.
    pub fn evaluate_endpoints(&self, endpoints: &[Arc<Endpoint>], now: Now) {
        let notifications = {
            let mut evaluator = self.lock();
            let mut readings = Vec::new();
            for endpoint in endpoints {
                if !evaluator.watches(endpoint.id()) {
                    continue;
                }
                let window = evaluator
                    .restarts
                    .entry(endpoint.id().to_string())
                    .or_default();
                readings.push((
                    endpoint.id().to_string(),
                    read(endpoint, window, now.instant),
                ));
            }
            evaluator.evaluate(&readings, now)
        };
        for notification in &notifications {
            tracing::warn!(
                alert = %notification.alert,
                endpoint = %notification.endpoint,
                state = notification.state.as_str(),
                "{}",
                notification.message()
            );
            self.notifier.send(notification);
        }
    }

    /// Every (rule, endpoint) pair as `GET /admin/alerts` shows it, in rule then endpoint
    /// order.
    pub fn statuses(&self) -> Vec<Value> {
        self.lock().entries.iter().map(Entry::to_json).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Evaluator> {
        // Every field stays consistent between statements: a panic leaves usable state.
        self.evaluator
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The rules and the state of each pair; plain synchronous code.
#[derive(Debug)]
struct Evaluator {
    rules: Vec<AlertRule>,
    evaluate_every: Duration,
    /// One per (rule, endpoint) pair seen at the last evaluation.
    entries: Vec<Entry>,
    /// Restart history per endpoint id.
    restarts: HashMap<String, RestartWindow>,
}

/// One rule on one endpoint.
#[derive(Debug, Clone)]
struct Entry {
    rule: AlertRule,
    endpoint: String,
    tracker: Tracker,
}

impl Entry {
    fn to_json(&self) -> Value {
        let rule = &self.rule;
        json!({
            "name": rule.name,
            "endpoint": self.endpoint,
            "metric": rule.metric.as_str(),
            "operator": rule.operator.as_str(),
            "threshold": rule.threshold,
            "for_seconds": rule.for_.as_secs(),
            "state": self.tracker.phase().as_str(),
            "value": self.tracker.value(),
            "since": self.tracker.since().map(rfc3339),
            "last_notified": self.tracker.last_notified().map(rfc3339),
        })
    }
}

fn rfc3339(time: SystemTime) -> String {
    Rfc3339(time).to_string()
}

impl Evaluator {
    fn new(alerts: &Alerts) -> Evaluator {
        Evaluator {
            rules: alerts.rules.clone(),
            evaluate_every: alerts.evaluate_every,
            entries: Vec::new(),
            restarts: HashMap::new(),
        }
    }

    fn replace(&mut self, alerts: &Alerts) {
        self.rules = alerts.rules.clone();
        self.evaluate_every = alerts.evaluate_every;
        // Pairs of a removed or changed rule leave at the next evaluation (their gauge
        // back to 0); a changed rule starts over in the ok state.
    }

    /// Whether any rule watches the endpoint with this id.
    fn watches(&self, endpoint: &str) -> bool {
        self.rules.iter().any(|rule| rule.endpoint.covers(endpoint))
    }

    /// Advances every (rule, endpoint) pair with the `readings` (by endpoint id, in
    /// endpoint order) taken at `now`, and returns the notifications due.
    fn evaluate(&mut self, readings: &[(String, Reading)], now: Now) -> Vec<Notification> {
        let mut old: HashMap<(String, String), Entry> = std::mem::take(&mut self.entries)
            .into_iter()
            .map(|entry| ((entry.rule.name.clone(), entry.endpoint.clone()), entry))
            .collect();
        let mut notifications = Vec::new();
        for rule in &self.rules {
            for (endpoint, reading) in readings {
                if !rule.endpoint.covers(endpoint) {
                    continue;
                }
                // `*` watches a queue only where there is one.
                if rule.metric == crate::config::AlertMetric::AsyncQueueDepth
                    && reading.async_queue.is_none()
                {
                    continue;
                }
                let mut entry = match old.remove(&(rule.name.clone(), endpoint.clone())) {
                    Some(entry) if entry.rule == *rule => entry,
                    _ => Entry {
                        rule: rule.clone(),
                        endpoint: endpoint.clone(),
                        tracker: Tracker::new(),
                    },
                };
                let value = reading.value(rule);
                let breaches = value.is_some_and(|v| rule.operator.holds(v, rule.threshold));
                let transition = entry.tracker.observe(value, breaches, rule.for_, now);
                let firing = entry.tracker.phase() == Phase::Firing;
                metrics::gauge!(
                    "portico_alert_firing",
                    "alert" => rule.name.clone(),
                    "endpoint" => endpoint.clone(),
                )
                .set(if firing { 1.0 } else { 0.0 });
                if let Some(transition) = transition {
                    notifications.push(notification(rule, endpoint, value, transition, now));
                }
                self.entries.push(entry);
            }
        }
        for ((name, endpoint), _) in old {
            if !self
                .entries
                .iter()
                .any(|e| e.rule.name == name && e.endpoint == endpoint)
            {
                metrics::gauge!("portico_alert_firing", "alert" => name, "endpoint" => endpoint)
                    .set(0.0);
            }
        }
        // Restart histories of endpoints no longer read are dropped.
        self.restarts
            .retain(|id, _| readings.iter().any(|(endpoint, _)| endpoint == id));
        notifications
    }
}

fn notification(
    rule: &AlertRule,
    endpoint: &str,
    value: Option<f64>,
    transition: Transition,
    now: Now,
) -> Notification {
    let (state, since) = match transition {
        Transition::Fired { since } => (State::Firing, since),
        Transition::Resolved { since } => (State::Resolved, since),
    };
    Notification {
        alert: rule.name.clone(),
        endpoint: endpoint.to_string(),
        metric: rule.metric,
        operator: rule.operator,
        threshold: rule.threshold,
        value,
        state,
        since,
        time: now.wall,
        channels: rule.notify.clone(),
    }
}
