//! How the admin API's endpoint JSON reads for people: the `endpoint list` table, the
//! `endpoint get` summary, replica table and scaling settings, and the events list. Every
//! field may be missing (older or newer daemons): a missing value shows as `-`.

use std::fmt::Write as _;

use serde_json::Value;

use super::table::Table;
use crate::config::file::FileScaling;

/// A JSON value as a cell: strings bare, numbers as written, `-` for null or missing.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        other => other.to_string(),
    }
}

/// A number with `decimals` digits after the point, `-` when it is not a number.
pub fn fixed(value: &Value, decimals: usize) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".into(), |n| format!("{n:.decimals$}"))
}

/// Milliseconds as `12 ms` (one decimal below 10 ms), `-` when missing.
pub fn millis(value: &Value) -> String {
    match value.as_f64() {
        Some(ms) if ms < 10.0 => format!("{ms:.1} ms"),
        Some(ms) => format!("{ms:.0} ms"),
        None => "-".into(),
    }
}

/// The `endpoint list` table.
pub fn endpoint_table(endpoints: &[Value]) -> Table {
    let mut table = Table::new(&[
        "ID",
        "PROJECT",
        "KIND",
        "MODE",
        "READY/DESIRED",
        "INFLIGHT",
        "PENDING",
        "RPS",
        "ERR%",
        "P95",
    ]);
    for endpoint in endpoints {
        let minute = &endpoint["last_minute"];
        table.row(vec![
            cell(&endpoint["id"]),
            cell(&endpoint["project"]),
            cell(&endpoint["kind"]),
            mode(endpoint),
            format!(
                "{}/{}",
                cell(&endpoint["workers"]["ready"]),
                cell(&endpoint["workers"]["desired"])
            ),
            cell(&endpoint["inflight"]),
            cell(&endpoint["pending"]),
            fixed(&minute["rps"], 1),
            percent(&minute["error_rate"]),
            millis(&minute["p95_ms"]),
        ]);
    }
    table
}

/// The mode, marked while a rolling restart runs.
fn mode(endpoint: &Value) -> String {
    let mode = cell(&endpoint["mode"]);
    if endpoint["restarting"].as_bool() == Some(true) {
        format!("{mode} (restarting)")
    } else {
        mode
    }
}

/// A fraction (0.0–1.0) as a percentage with one decimal.
fn percent(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".into(), |rate| format!("{:.1}%", rate * 100.0))
}

/// The one-line state of an endpoint after an order: `e1: manual, 1/2 ready/desired (why)`.
pub fn status_line(endpoint: &Value) -> String {
    let mut line = format!(
        "{}: {}, {}/{} workers ready/desired",
        cell(&endpoint["id"]),
        mode(endpoint),
        cell(&endpoint["workers"]["ready"]),
        cell(&endpoint["workers"]["desired"]),
    );
    if let Some(reason) = endpoint["reason"].as_str().filter(|r| !r.is_empty()) {
        let _ = write!(line, " ({reason})");
    }
    line
}

/// `endpoint get`: summary, replicas, scaling settings.
pub fn endpoint_detail(endpoint: &Value) -> String {
    let workers = &endpoint["workers"];
    let mut summary: Vec<(&str, String)> = vec![
        ("endpoint", cell(&endpoint["id"])),
        ("project", cell(&endpoint["project"])),
        ("kind", cell(&endpoint["kind"])),
        ("mode", mode(endpoint)),
        ("reason", cell(&endpoint["reason"])),
        (
            "workers",
            format!(
                "{} ready / {} desired ({} starting, {} draining, {} failed)",
                cell(&workers["ready"]),
                cell(&workers["desired"]),
                cell(&workers["starting"]),
                cell(&workers["draining"]),
                cell(&workers["failed"]),
            ),
        ),
        ("inflight", cell(&endpoint["inflight"])),
        ("pending", cell(&endpoint["pending"])),
    ];
    if !endpoint["async_jobs"].is_null() {
        summary.push(("async jobs", cell(&endpoint["async_jobs"])));
    }
    let minute = &endpoint["last_minute"];
    if minute.is_object() {
        summary.push((
            "last minute",
            format!(
                "{} requests, {} rps, {} errors, p50 {}, p95 {}",
                cell(&minute["requests"]),
                fixed(&minute["rps"], 1),
                percent(&minute["error_rate"]),
                millis(&minute["p50_ms"]),
                millis(&minute["p95_ms"]),
            ),
        ));
    }
    let mut out = String::new();
    let width = summary.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in &summary {
        let _ = writeln!(out, "{key:<width$}  {value}");
    }

    let mut replicas = Table::new(&[
        "REPLICA", "ADDRESS", "STATE", "HEALTH", "PID", "INFLIGHT", "UPTIME", "RESTARTS",
    ]);
    for replica in workers["replicas"].as_array().into_iter().flatten() {
        replicas.row(vec![
            cell(&replica["id"]),
            cell(&replica["address"]),
            cell(&replica["state"]),
            cell(&replica["health"]),
            cell(&replica["pid"]),
            cell(&replica["inflight"]),
            replica["uptime_seconds"]
                .as_f64()
                .map_or_else(|| "-".into(), |s| format!("{s:.0}s")),
            cell(&replica["restarts"]),
        ]);
    }
    out.push('\n');
    if replicas.is_empty() {
        out.push_str("no replicas\n");
    } else {
        out.push_str(&replicas.to_string());
    }

    if let Some(scaling) = endpoint["scaling"].as_object() {
        out.push_str("\nscaling\n");
        let mut keys: Vec<&str> = FileScaling::KEYS
            .iter()
            .copied()
            .filter(|k| scaling.contains_key(*k))
            .collect();
        keys.extend(
            scaling
                .keys()
                .map(String::as_str)
                .filter(|k| !FileScaling::KEYS.contains(k)),
        );
        let width = keys.iter().map(|k| k.len()).max().unwrap_or(0);
        for key in keys {
            let _ = writeln!(out, "  {key:<width$}  {}", cell(&scaling[key]));
        }
    }
    out
}

/// `endpoint events`: one line per event, oldest first.
pub fn events_table(events: &[Value]) -> Table {
    let mut table = Table::new(&["SEQ", "TIME", "TYPE", "MESSAGE"]);
    for event in events {
        let mut message = cell(&event["message"]);
        // The reason, unless the message already tells it.
        if let Some(reason) = event["reason"].as_str().filter(|r| !message.contains(r)) {
            let _ = write!(message, " [{reason}]");
        }
        table.row(vec![
            cell(&event["seq"]),
            cell(&event["time"]),
            cell(&event["type"]),
            message,
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A listed endpoint shows its counts and last-minute traffic; without `last_minute` the
    /// traffic columns read `-`.
    #[test]
    fn list_rows() {
        let with = json!({
            "id": "e1", "project": "p1", "kind": "process", "mode": "auto",
            "inflight": 3, "pending": 0, "workers": {"ready": 1, "desired": 2},
            "last_minute": {"requests": 60, "rps": 1.0, "error_rate": 0.05,
                            "p50_ms": 3.25, "p95_ms": 120.4},
        });
        let without = json!({"id": "e2", "mode": "stopped", "restarting": true});
        let text = endpoint_table(&[with, without]).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID  PROJECT  KIND"), "{text}");
        let first: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            first,
            [
                "e1", "p1", "process", "auto", "1/2", "3", "0", "1.0", "5.0%", "120", "ms"
            ]
        );
        assert!(lines[2].contains("stopped (restarting)"), "{text}");
        assert!(lines[2].contains("-/-"), "{text}");
    }

    /// The detail view names every part, with scaling keys in reading order.
    #[test]
    fn detail_sections() {
        let endpoint = json!({
            "id": "e1", "project": "p1", "kind": "process", "mode": "manual",
            "reason": "pinned by the operator", "async_jobs": null,
            "workers": {"ready": 1, "desired": 1, "starting": 0, "draining": 0, "failed": 0,
                "replicas": [{"id": 0, "address": "127.0.0.1:4000", "state": "ready",
                    "health": "healthy", "pid": 42, "inflight": 0, "uptime_seconds": 12.3,
                    "restarts": 0}]},
            "scaling": {"target": 4.0, "min_workers": 0, "max_workers": 3, "metric": "rps"},
        });
        let text = endpoint_detail(&endpoint);
        assert!(text.contains("mode      manual"), "{text}");
        assert!(!text.contains("async jobs"), "{text}");
        assert!(text.contains("127.0.0.1:4000"), "{text}");
        assert!(text.contains("12s"), "{text}");
        let min = text.find("min_workers").unwrap();
        let target = text.find("target").unwrap();
        assert!(min < target, "{text}");
    }

    /// Events show their reason after the message.
    #[test]
    fn event_lines() {
        let events = [
            json!({"seq": 3, "time": "2026-01-01T00:00:00Z", "type": "scaled",
                             "message": "1 → 2 workers", "reason": "concurrency"}),
        ];
        let text = events_table(&events).to_string();
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .ends_with("1 → 2 workers [concurrency]")
        );
    }
}
