//! `/admin/series` and `/admin/endpoints/{id}/series`: the last 15 minutes of each
//! endpoint, one point every [`INTERVAL`], for the console's charts.
//!
//! A sampler task on the admin runtime reads every endpoint's state each interval (the
//! rolling minute of traffic, in-flight and held requests, workers, async jobs), whether
//! or not anyone looks, so that a console opened now shows what happened before. Memory:
//! at most [`POINTS`] small points per endpoint; removed endpoints are forgotten at the
//! next sample.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use super::Admin;
use super::endpoints::{error, find};
use crate::accesslog::Rfc3339;
use crate::endpoint::Endpoint;
use crate::pipeline::Shared;

/// Time between points.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Points kept per endpoint: 15 minutes.
const POINTS: usize = 180;
/// Longest span a request may ask for, in minutes.
const MAX_MINUTES: u64 = 15;

/// One endpoint at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// When it was taken (RFC 3339, UTC).
    time: Rfc3339,
    /// Requests per second over the minute ending at `time`.
    rps: f64,
    /// Share of 5xx answers over that minute.
    error_rate: f64,
    /// 95th percentile duration over that minute; `None` without requests.
    p95_ms: Option<f64>,
    /// Requests in flight on the endpoint's workers.
    inflight: u64,
    /// Requests held while no worker is ready.
    pending: u32,
    /// Workers taking requests.
    ready: usize,
    /// Workers the scaler wants.
    desired: u32,
    /// Async jobs waiting or running; `None` without `[endpoint.async]`.
    async_jobs: Option<u64>,
}

impl Point {
    fn of(endpoint: &Endpoint, now: SystemTime) -> Point {
        let minute = endpoint.traffic.last_minute_at(now);
        let control = &endpoint.control;
        Point {
            time: Rfc3339(now),
            rps: (minute.rps * 1000.0).round() / 1000.0,
            error_rate: (minute.error_rate * 10_000.0).round() / 10_000.0,
            p95_ms: minute.p95_ms,
            inflight: endpoint.inflight(),
            pending: control.admission.pending(),
            ready: endpoint.workers().iter().filter(|w| w.available()).count(),
            desired: control.status().desired,
            async_jobs: endpoint.jobs().map(|_| control.queued()),
        }
    }
}

/// The recent points of every endpoint, by endpoint id.
#[derive(Debug, Default)]
pub struct Series {
    points: Mutex<HashMap<String, VecDeque<Point>>>,
}

impl Series {
    /// Adds a point for each endpoint in force and forgets endpoints that are gone.
    fn sample(&self, endpoints: &[Arc<Endpoint>], now: SystemTime) {
        let mut points = self.points.lock().unwrap_or_else(PoisonError::into_inner);
        points.retain(|id, _| endpoints.iter().any(|e| e.id() == id));
        for endpoint in endpoints {
            let kept = points.entry(endpoint.id().to_string()).or_default();
            if kept.len() == POINTS {
                kept.pop_front();
            }
            kept.push_back(Point::of(endpoint, now));
        }
    }

    /// The last `minutes` of the endpoint `id`, oldest first.
    fn recent(&self, id: &str, minutes: u64) -> Vec<Point> {
        let count = (minutes * 60 / INTERVAL.as_secs()) as usize;
        let points = self.points.lock().unwrap_or_else(PoisonError::into_inner);
        points.get(id).map_or_else(Vec::new, |kept| {
            kept.iter()
                .skip(kept.len().saturating_sub(count))
                .cloned()
                .collect()
        })
    }
}

/// Samples every endpoint each [`INTERVAL`] until `stop` turns true.
pub async fn run(series: Arc<Series>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => series.sample(shared.routes.load().endpoints(), SystemTime::now()),
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// The routes of the series.
pub fn routes() -> Router<Admin> {
    Router::new()
        .route("/admin/series", get(all))
        .route("/admin/endpoints/{id}/series", get(one))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesQuery {
    minutes: Option<u64>,
}

type QueryResult = Result<Query<SeriesQuery>, axum::extract::rejection::QueryRejection>;

/// The span asked for; `None` when the query is not `minutes=1..=15` (or nothing).
fn minutes(query: QueryResult) -> Option<u64> {
    match query {
        Ok(Query(SeriesQuery { minutes: None })) => Some(MAX_MINUTES),
        Ok(Query(SeriesQuery { minutes: Some(m) })) => (1..=MAX_MINUTES).contains(&m).then_some(m),
        Err(_) => None,
    }
}

fn invalid_query() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        &format!("the only parameter is minutes, a whole number from 1 to {MAX_MINUTES}"),
    )
}

async fn all(State(admin): State<Admin>, query: QueryResult) -> Response {
    let Some(minutes) = minutes(query) else {
        return invalid_query();
    };
    let routes = admin.shared.routes.load();
    let endpoints: Vec<_> = routes
        .endpoints()
        .iter()
        .map(|e| json!({"endpoint": e.id(), "points": admin.series.recent(e.id(), minutes)}))
        .collect();
    axum::Json(json!({"interval_seconds": INTERVAL.as_secs(), "endpoints": endpoints}))
        .into_response()
}

async fn one(State(admin): State<Admin>, Path(id): Path<String>, query: QueryResult) -> Response {
    let endpoint = match find(&admin, &id) {
        Ok(endpoint) => endpoint,
        Err(missing) => return missing.into_response(),
    };
    let Some(minutes) = minutes(query) else {
        return invalid_query();
    };
    axum::Json(json!({
        "endpoint": endpoint.id(),
        "interval_seconds": INTERVAL.as_secs(),
        "points": admin.series.recent(endpoint.id(), minutes),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str) -> Arc<Endpoint> {
        let text = format!(
            "[server]\nadmin_listen = \"127.0.0.1:0\"\n[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n\
             [[project]]\nid = \"p\"\n[[endpoint]]\nid = \"{id}\"\nproject = \"p\"\npublic = true\n\
             [endpoint.workers]\nkind = \"static\"\nurls = [\"http://127.0.0.1:9\"]\n"
        );
        let config = crate::config::Config::from_toml_str(&text, std::path::Path::new("."))
            .expect("valid config");
        let listeners = vec!["l".to_string()];
        Arc::new(Endpoint::new(
            &config,
            config.endpoints[0].clone(),
            &listeners,
        ))
    }

    /// Points are kept for 15 minutes, oldest first; a removed endpoint is forgotten.
    #[test]
    fn keeps_fifteen_minutes_and_forgets_removed_endpoints() {
        let series = Series::default();
        let (a, b) = (endpoint("a"), endpoint("b"));
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for i in 0..POINTS as u64 + 10 {
            series.sample(
                &[Arc::clone(&a), Arc::clone(&b)],
                start + INTERVAL * i as u32,
            );
        }
        let kept = series.recent("a", 15);
        assert_eq!(kept.len(), POINTS);
        assert_eq!(kept[0].time.0, start + INTERVAL * 10);
        assert_eq!(series.recent("a", 1).len(), 12);
        assert_eq!(kept[0].ready, 1, "a static worker starts out available");
        series.sample(&[Arc::clone(&a)], start);
        assert!(series.recent("b", 15).is_empty());
        assert_eq!(series.recent("a", 15).len(), POINTS);
    }
}
