//! `portico endpoint usage`: an endpoint's hourly access analytics as one row per hour, a
//! total, and per-caller totals over the whole span.

use serde_json::Value;

use super::table::Table;
use super::view::{cell, millis};

/// The hours table: one row per hour, then the total (when the API gives one).
pub fn hours_table(answer: &Value) -> Table {
    let mut table = Table::new(&[
        "HOUR",
        "REQUESTS",
        "4XX",
        "5XX",
        "P50",
        "P95",
        "BYTES IN",
        "BYTES OUT",
        "PROMPT TOK",
        "COMPL TOK",
    ]);
    for hour in answer["hours"].as_array().into_iter().flatten() {
        table.row(row(cell(&hour["hour"]), hour));
    }
    if answer["total"].is_object() {
        table.row(row("total".into(), &answer["total"]));
    }
    table
}

fn row(label: String, counts: &Value) -> Vec<String> {
    vec![
        label,
        cell(&counts["requests"]),
        cell(&counts["errors"]["4xx"]),
        cell(&counts["errors"]["5xx"]),
        millis(&counts["p50_ms"]),
        millis(&counts["p95_ms"]),
        cell(&counts["bytes_in"]),
        cell(&counts["bytes_out"]),
        cell(&counts["usage"]["prompt_tokens"]),
        cell(&counts["usage"]["completion_tokens"]),
    ]
}

/// Per-caller totals: the API's `total.callers` when present, else the hours' callers added
/// up; busiest caller first.
pub fn callers_table(answer: &Value) -> Table {
    let mut totals: Vec<(String, [u64; 4])> = Vec::new();
    let listed = answer["total"]["callers"].as_array();
    let callers: Vec<&Value> = match listed {
        Some(list) => list.iter().collect(),
        None => answer["hours"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|hour| hour["callers"].as_array().into_iter().flatten())
            .collect(),
    };
    for caller in callers {
        let name = cell(&caller["caller"]);
        let counts = [
            count(&caller["requests"]),
            count(&caller["errors"]),
            count(&caller["prompt_tokens"]),
            count(&caller["completion_tokens"]),
        ];
        match totals.iter_mut().find(|(n, _)| *n == name) {
            Some((_, sum)) => {
                for (total, add) in sum.iter_mut().zip(counts) {
                    *total += add;
                }
            }
            None => totals.push((name, counts)),
        }
    }
    totals.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then_with(|| a.0.cmp(&b.0)));
    let mut table = Table::new(&["CALLER", "REQUESTS", "ERRORS", "PROMPT TOK", "COMPL TOK"]);
    for (name, [requests, errors, prompt, completion]) in totals {
        table.row(vec![
            name,
            requests.to_string(),
            errors.to_string(),
            prompt.to_string(),
            completion.to_string(),
        ]);
    }
    table
}

/// A count, or the sum of an object of counts (`{"4xx": 1, "5xx": 2}`); 0 when missing.
fn count(value: &Value) -> u64 {
    match value {
        Value::Object(parts) => parts.values().filter_map(Value::as_u64).sum(),
        other => other.as_u64().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answer(total_callers: bool) -> Value {
        let mut total = json!({"requests": 5, "errors": {"4xx": 1, "5xx": 0},
            "p50_ms": 2.0, "p95_ms": 30.0, "bytes_in": 10, "bytes_out": 20,
            "usage": {"prompt_tokens": 7, "completion_tokens": 9}});
        if total_callers {
            total["callers"] = json!([{"caller": "svc", "requests": 5, "errors": 1,
                "prompt_tokens": 7, "completion_tokens": 9}]);
        }
        json!({"endpoint": "e1", "hours": [
            {"hour": "2026-11-23T20:00:00Z", "requests": 2, "errors": {"4xx": 1, "5xx": 0},
             "callers": [{"caller": "svc", "requests": 2, "errors": {"4xx": 1},
                          "prompt_tokens": 3, "completion_tokens": 4}]},
            {"hour": "2026-11-23T21:00:00Z", "requests": 3,
             "callers": [{"caller": "svc", "requests": 1, "errors": 0},
                         {"caller": "bot", "requests": 2, "errors": 0}]},
        ], "total": total})
    }

    /// One row per hour and a total row; missing fields read `-`.
    #[test]
    fn hours_and_total() {
        let text = hours_table(&answer(false)).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].starts_with("2026-11-23T20:00:00Z"), "{text}");
        assert!(lines[2].contains(" - "), "{text}");
        assert!(lines[3].starts_with("total"), "{text}");
    }

    /// Callers are added up across hours unless the total lists them.
    #[test]
    fn callers_summed_or_taken() {
        let summed = callers_table(&answer(false)).to_string();
        let rows: Vec<Vec<&str>> = summed
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec!["svc", "3", "1", "3", "4"],
                vec!["bot", "2", "0", "0", "0"]
            ]
        );
        let taken = callers_table(&answer(true)).to_string();
        assert!(taken.lines().nth(1).unwrap().starts_with("svc"), "{taken}");
        assert_eq!(taken.lines().count(), 2, "{taken}");
    }
}
