//! The JSON documents of async jobs (DESIGN.md §5): the status the status API and webhooks
//! send, and the result written to the object store.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::accesslog::Rfc3339;
use crate::queue::{JobState, JobStatus};

/// How a job ended, as its result records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `completed`, `failed` or `expired`.
    pub status: JobStatus,
    /// The worker's last status code, if it answered.
    pub status_code: Option<u16>,
    /// The worker's response headers (names lowercase).
    pub headers: Vec<(String, String)>,
    /// The worker's body.
    pub body: Option<Bytes>,
    /// Why the job failed or expired.
    pub error: Option<String>,
}

/// `{"request_id","status","response_location","attempts","submitted_at","updated_at"}`.
pub fn status(state: &JobState, location: &str) -> Value {
    json!({
        "request_id": state.id,
        "status": state.status.as_str(),
        "response_location": location,
        "attempts": state.attempts,
        "submitted_at": time(state.submitted_at_ms),
        "updated_at": time(state.updated_at_ms),
    })
}

/// The result document. `body` is the worker's JSON when it parses, else its text.
pub fn result(state: &JobState, outcome: &Outcome, attempts: u32, completed_at_ms: u64) -> Bytes {
    let headers: Map<String, Value> = outcome
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    let body = outcome.body.as_ref().map_or(Value::Null, |bytes| {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    });
    let document = json!({
        "request_id": state.id,
        "endpoint": state.endpoint,
        "route": state.route,
        "status": outcome.status.as_str(),
        "status_code": outcome.status_code,
        "headers": headers,
        "body": body,
        "error": outcome.error,
        "attempts": attempts,
        "submitted_at": time(state.submitted_at_ms),
        "started_at": state.started_at_ms.map(time),
        "completed_at": time(completed_at_ms),
    });
    Bytes::from(document.to_string())
}

/// The status recorded in a result document written earlier (a redelivered job whose
/// result is already stored).
pub fn stored_status(document: &[u8]) -> Option<JobStatus> {
    let value: Value = serde_json::from_slice(document).ok()?;
    serde_json::from_value(value.get("status")?.clone()).ok()
}

fn time(ms: u64) -> String {
    Rfc3339(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> JobState {
        JobState {
            id: "0192".into(),
            endpoint: "chat".into(),
            route: "/v1/chat/completions".into(),
            headers: vec![],
            webhook: None,
            idempotency_key: None,
            ttl_ms: 1000,
            status: JobStatus::InProgress,
            attempts: 2,
            submitted_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_000_500,
            started_at_ms: Some(1_700_000_000_100),
        }
    }

    /// The status document has exactly the contract's fields.
    #[test]
    fn status_fields() {
        let doc = status(&state(), "s3://b/api/chat/request/0192.json");
        assert_eq!(doc["status"], "in_progress");
        assert_eq!(doc["attempts"], 2);
        assert_eq!(doc["submitted_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(doc["updated_at"], "2023-11-14T22:13:20.500Z");
        assert_eq!(doc.as_object().unwrap().len(), 6);
    }

    /// A JSON body is embedded as JSON, anything else as text, and the status reads back.
    #[test]
    fn result_bodies() {
        let mut outcome = Outcome {
            status: JobStatus::Completed,
            status_code: Some(200),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(Bytes::from_static(br#"{"id":"x"}"#)),
            error: None,
        };
        let doc: Value = serde_json::from_slice(&result(&state(), &outcome, 2, 1)).unwrap();
        assert_eq!(doc["body"]["id"], "x");
        assert_eq!(doc["status_code"], 200);
        assert_eq!(doc["headers"]["content-type"], "application/json");
        assert_eq!(doc["started_at"], "2023-11-14T22:13:20.100Z");
        assert_eq!(doc.as_object().unwrap().len(), 12);

        outcome.status = JobStatus::Failed;
        outcome.body = Some(Bytes::from_static(b"upstream exploded"));
        outcome.error = Some("worker answered 500".into());
        let raw = result(&state(), &outcome, 3, 1);
        let doc: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(doc["body"], "upstream exploded");
        assert_eq!(doc["error"], "worker answered 500");
        assert_eq!(stored_status(&raw), Some(JobStatus::Failed));
        assert_eq!(stored_status(b"not json"), None);
    }
}
