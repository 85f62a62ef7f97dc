//! `GET /admin/endpoints/{id}/logs`: the output of the endpoint's worker processes, from the
//! process actuator's per-replica rings: the last `lines` lines or those of the last
//! `since_seconds`, of one `replica` or all of them interleaved by time, matching `filter`
//! (a regular expression); with `follow=true`, then every new matching line as server-sent
//! events until the client leaves or Portico stops.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use regex::Regex;
use scaler::LogLine;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::Admin;
use super::endpoints::{error, find};
use crate::accesslog::Rfc3339;

/// Lines returned when the query names no count.
const DEFAULT_LINES: usize = 100;
/// Most lines one answer holds (a replica's ring keeps 1,000).
const MAX_LINES: usize = 10_000;
/// Longest filter accepted, and the compiled size allowed (no expensive patterns).
const MAX_FILTER: usize = 1024;
/// A comment on a quiet follow stream, so that idle intermediaries keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The query string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogsQuery {
    replica: Option<u32>,
    lines: Option<usize>,
    since_seconds: Option<u64>,
    filter: Option<String>,
    follow: Option<bool>,
}

/// Which lines a request wants.
struct Selection {
    replica: Option<u32>,
    filter: Option<Regex>,
}

impl Selection {
    fn wants(&self, line: &LogLine) -> bool {
        self.replica.is_none_or(|r| r == line.replica)
            && self.filter.as_ref().is_none_or(|f| f.is_match(&line.text))
    }
}

pub(super) async fn logs(
    State(admin): State<Admin>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Response {
    let endpoint = match find(&admin, &id) {
        Ok(endpoint) => endpoint,
        Err(missing) => return missing.into_response(),
    };
    let Ok(Query(query)) = query else {
        return invalid(
            "replica, lines and since_seconds must be whole numbers, follow true or false",
        );
    };
    let lines = query.lines.unwrap_or(DEFAULT_LINES);
    if lines == 0 || lines > MAX_LINES {
        return invalid(&format!("lines must be between 1 and {MAX_LINES}"));
    }
    let filter = match query.filter.as_deref().map(compile).transpose() {
        Ok(filter) => filter,
        Err(message) => return invalid(&message),
    };
    let selection = Selection {
        replica: query.replica,
        filter,
    };
    let since = query.since_seconds.map(|s| {
        // Further back than the clock goes: every line.
        SystemTime::now()
            .checked_sub(Duration::from_secs(s))
            .unwrap_or(UNIX_EPOCH)
    });
    let Some(actuator) = endpoint.control.actuator() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the endpoint's controller is not running",
        );
    };
    // The whole ring, filtered, then the newest `lines`: a filter narrows what is counted.
    let mut recent: Vec<LogLine> = actuator
        .logs(selection.replica, usize::MAX, since)
        .into_iter()
        .filter(|line| selection.wants(line))
        .collect();
    let recent = recent.split_off(recent.len().saturating_sub(lines));
    if !query.follow.unwrap_or(false) {
        let lines: Vec<Value> = recent.iter().map(to_json).collect();
        return axum::Json(json!({ "endpoint": endpoint.id(), "lines": lines })).into_response();
    }
    let Some(live) = actuator.follow() else {
        return invalid("follow needs workers Portico starts (kind = \"process\")");
    };
    let backlog = recent.iter().map(event).collect::<Vec<_>>();
    let stream = follow(backlog, live, selection, admin.shared.stop.clone());
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The backlog, then each new matching line, as SSE events; ends when Portico stops.
fn follow(
    backlog: Vec<Bytes>,
    live: broadcast::Receiver<LogLine>,
    selection: Selection,
    stop: watch::Receiver<bool>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    let backlog = futures_util::stream::iter(backlog.into_iter().map(Ok));
    let live = futures_util::stream::unfold(
        (live, selection, stop),
        |(mut live, selection, mut stop)| async move {
            loop {
                let next = tokio::select! {
                    line = live.recv() => Some(line),
                    _ = stop.wait_for(|stopped| *stopped) => return None,
                    () = tokio::time::sleep(KEEPALIVE) => None,
                };
                let chunk = match next {
                    None => Bytes::from_static(b": keep-alive\n\n"),
                    Some(Ok(line)) if selection.wants(&line) => event(&line),
                    Some(Ok(_)) => continue,
                    Some(Err(broadcast::error::RecvError::Lagged(skipped))) => {
                        Bytes::from(format!(": {skipped} lines skipped (reader too slow)\n\n"))
                    }
                    Some(Err(broadcast::error::RecvError::Closed)) => return None,
                };
                return Some((Ok(chunk), (live, selection, stop)));
            }
        },
    );
    futures_util::StreamExt::chain(backlog, live)
}

fn compile(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > MAX_FILTER {
        return Err(format!("filter is longer than {MAX_FILTER} bytes"));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|err| format!("filter is not a valid regular expression: {err}"))
}

fn to_json(line: &LogLine) -> Value {
    let time = line.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    json!({
        "time": Rfc3339(UNIX_EPOCH + time).to_string(),
        "replica": line.replica,
        "stream": line.stream.as_str(),
        "line": line.text,
    })
}

fn event(line: &LogLine) -> Bytes {
    Bytes::from(format!("data: {}\n\n", to_json(line)))
}

fn invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_query", message)
}
