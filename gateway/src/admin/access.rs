//! `GET /admin/endpoints/{id}/access/hourly?hours=N`: the endpoint's traffic per UTC hour
//! for the last `N` hours (1–720, default 24), this hour included, oldest first and
//! zero-filled, with a total over the range.
//!
//! Per hour: requests, errors by class (`4xx`, `5xx`), latency percentiles (`p50_ms`,
//! `p95_ms`, to 12.5 %, null without requests), body bytes both ways, token usage, and the
//! callers (project token names; `anonymous` without a token; `other` for names past the
//! 1,000 kept per hour) sorted by requests, most first. A caller's `errors` counts its 4xx
//! and 5xx answers together.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Admin;
use super::endpoints::{error, find};
use crate::accesslog::Rfc3339;
use crate::traffic::histogram::WideHistogram;
use crate::traffic::{self, Caller, CallerCount, Hour, RETENTION_HOURS};

/// Hours shown when the query names none.
const DEFAULT_HOURS: u64 = 24;

/// The route.
pub fn routes() -> Router<Admin> {
    Router::new().route("/admin/endpoints/{id}/access/hourly", get(hourly))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HourlyQuery {
    /// Kept as text so that every bad value gets the same answer.
    hours: Option<String>,
}

async fn hourly(
    State(admin): State<Admin>,
    Path(id): Path<String>,
    query: Result<Query<HourlyQuery>, QueryRejection>,
) -> Response {
    let endpoint = match find(&admin, &id) {
        Ok(endpoint) => endpoint,
        Err(missing) => return missing.into_response(),
    };
    let hours = match query {
        Ok(Query(HourlyQuery { hours: None })) => DEFAULT_HOURS,
        Ok(Query(HourlyQuery { hours: Some(text) })) => match text.parse::<u64>() {
            Ok(n) if (1..=RETENTION_HOURS).contains(&n) => n,
            _ => return invalid(),
        },
        Err(_) => return invalid(),
    };
    let now = SystemTime::now();
    let last = traffic::current_hour(now);
    let first = last.saturating_sub(hours - 1);
    let counted = endpoint.traffic.hours_at(first..=last, now);
    axum::Json(breakdown(endpoint.id(), first..=last, &counted)).into_response()
}

fn invalid() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        &format!("hours must be a whole number from 1 to {RETENTION_HOURS}"),
    )
}

/// The answer: every hour of `range`, from `counted` (hours with requests, in order).
fn breakdown(
    endpoint: &str,
    range: std::ops::RangeInclusive<u64>,
    counted: &[(u64, Hour)],
) -> Value {
    let empty = Hour::default();
    let mut counted = counted.iter().peekable();
    let mut total = Total::default();
    let mut hours = Vec::new();
    for hour in range {
        let this = match counted.next_if(|(h, _)| *h == hour) {
            Some((_, counted)) => counted,
            None => &empty,
        };
        total.add(this);
        let mut callers: Vec<(Caller, CallerCount)> = this.callers.iter().collect();
        sort(&mut callers);
        let mut shown = summary(
            this,
            this.latency.percentile_ms(0.50),
            this.latency.percentile_ms(0.95),
            &callers,
        );
        if let Value::Object(fields) = &mut shown {
            fields.insert("hour".into(), Value::String(hour_text(hour)));
        }
        hours.push(shown);
    }
    let mut callers: Vec<(Caller, CallerCount)> = total.callers.into_iter().collect();
    sort(&mut callers);
    json!({
        "endpoint": endpoint,
        "hours": hours,
        "total": summary(
            &total.sums,
            total.latency.percentile_ms(0.50),
            total.latency.percentile_ms(0.95),
            &callers,
        ),
    })
}

/// Sums over the range (latency with 64-bit counts, callers without a bound: their
/// names are at most the hours' own).
#[derive(Default)]
struct Total {
    sums: Hour,
    latency: WideHistogram,
    callers: HashMap<Caller, CallerCount>,
}

impl Total {
    fn add(&mut self, hour: &Hour) {
        // Latency and callers are summed wider here than an hour holds them.
        self.sums.add_counts(hour);
        self.latency.add(&hour.latency);
        for (caller, count) in hour.callers.iter() {
            self.callers.entry(caller).or_default().merge(&count);
        }
    }
}

/// Most requests first; ties by name, so the order is stable.
fn sort(callers: &mut [(Caller, CallerCount)]) {
    callers.sort_by(|(a, ac), (b, bc)| {
        bc.requests
            .cmp(&ac.requests)
            .then_with(|| a.as_str().cmp(b.as_str()))
    });
}

/// The fields shared by an hour and the total (`p50`/`p95` given, since the total's come
/// from a wider histogram).
fn summary(
    hour: &Hour,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    callers: &[(Caller, CallerCount)],
) -> Value {
    let callers: Vec<Value> = callers
        .iter()
        .map(|(caller, count)| {
            json!({
                "caller": caller.as_str(),
                "requests": count.requests,
                "errors": count.errors,
                "prompt_tokens": count.prompt_tokens,
                "completion_tokens": count.completion_tokens,
            })
        })
        .collect();
    json!({
        "requests": hour.requests,
        "errors": { "4xx": hour.client_errors, "5xx": hour.server_errors },
        "p50_ms": p50_ms,
        "p95_ms": p95_ms,
        "bytes_in": hour.bytes_in,
        "bytes_out": hour.bytes_out,
        "usage": {
            "prompt_tokens": hour.prompt_tokens,
            "completion_tokens": hour.completion_tokens,
        },
        "callers": callers,
    })
}

/// `2026-11-23T20:00:00Z` for the hour number `hour`.
fn hour_text(hour: u64) -> String {
    let text = Rfc3339(UNIX_EPOCH + Duration::from_secs(hour * 3600)).to_string();
    // An hour's start has no milliseconds.
    text.replace(".000Z", "Z")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::traffic::{Sample, Traffic, Usage};

    const HOUR: u64 = 498_740;

    /// Every hour of the range appears once, oldest first, zero-filled with null
    /// percentiles; callers are sorted by requests; the total sums the range.
    #[test]
    fn zero_filled_sorted_and_totalled() {
        let traffic = Traffic::new("e");
        let (ci, web): (Arc<str>, Arc<str>) = (Arc::from("ci"), Arc::from("web"));
        let at = |hour: u64| UNIX_EPOCH + Duration::from_secs(hour * 3600 + 60);
        let calls = [
            (HOUR - 2, Some(&web), 200, Some((5, 6))),
            (HOUR, Some(&ci), 200, Some((1, 2))),
            (HOUR, Some(&ci), 503, None),
            (HOUR, None, 401, None),
            (HOUR, Some(&web), 404, None),
            (HOUR, Some(&ci), 200, None),
        ];
        for (hour, caller, status, usage) in calls {
            traffic.record(&Sample {
                at: at(hour),
                status,
                duration: Duration::from_millis(8),
                bytes_in: 10,
                bytes_out: 20,
                caller,
                usage: usage.map(|(p, c)| Usage {
                    prompt_tokens: p,
                    completion_tokens: c,
                }),
            });
        }
        let counted = traffic.hours_at(HOUR - 3..=HOUR, at(HOUR));
        let answer = breakdown("e", HOUR - 3..=HOUR, &counted);
        let hours = answer["hours"].as_array().unwrap();
        let names: Vec<&str> = hours.iter().map(|h| h["hour"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "2026-11-23T17:00:00Z",
                "2026-11-23T18:00:00Z",
                "2026-11-23T19:00:00Z",
                "2026-11-23T20:00:00Z"
            ]
        );
        assert_eq!(hours[0]["requests"], 0);
        assert_eq!(hours[0]["p50_ms"], Value::Null);
        assert_eq!(hours[0]["callers"], json!([]));
        assert_eq!(
            hours[1]["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 6})
        );
        let now = &hours[3];
        assert_eq!(now["requests"], 5);
        assert_eq!(now["errors"], json!({"4xx": 2, "5xx": 1}));
        assert_eq!(
            (now["bytes_in"].clone(), now["bytes_out"].clone()),
            (json!(50), json!(100))
        );
        let p50 = now["p50_ms"].as_f64().unwrap();
        assert!((p50 - 8.0).abs() <= 1.0, "{p50}");
        assert_eq!(
            now["callers"],
            json!([
                {"caller": "ci", "requests": 3, "errors": 1, "prompt_tokens": 1, "completion_tokens": 2},
                {"caller": "anonymous", "requests": 1, "errors": 1, "prompt_tokens": 0, "completion_tokens": 0},
                {"caller": "web", "requests": 1, "errors": 1, "prompt_tokens": 0, "completion_tokens": 0},
            ])
        );
        let total = &answer["total"];
        assert!(total.get("hour").is_none());
        assert_eq!(total["requests"], 6);
        assert_eq!(
            total["usage"],
            json!({"prompt_tokens": 6, "completion_tokens": 8})
        );
        assert_eq!(total["callers"][0]["caller"], "ci");
        assert_eq!(
            total["callers"][1],
            json!({"caller": "web", "requests": 2, "errors": 1, "prompt_tokens": 5, "completion_tokens": 6})
        );
    }
}
