//! Async (DESIGN.md §1 stage 4, §5): on an endpoint with `[endpoint.async]`, a `POST` to one
//! of its routes (or to `/v1/async/<route>`) is validated, persisted, and answered `202` at
//! once; `GET /v1/async/status/<id>` reads a job's state. Everything else passes through.
//!
//! The job is on disk (or in Redis) before the `202` leaves: an accepted request is never
//! lost. Intake never waits for a worker, so an endpoint at zero workers takes jobs at full
//! speed while the dispatcher wakes it.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::body::{BodyError, ProxyBody, RequestBody};
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::jobs::{Jobs, document, webhook};
use crate::queue::NewJob;
use crate::stage::telemetry::Record;

/// The explicit async prefix below an endpoint.
const ASYNC_PREFIX: &str = "/v1/async";
/// The status API below an endpoint.
const STATUS_PREFIX: &str = "/v1/async/status/";
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const X_WEBHOOK_URL: HeaderName = HeaderName::from_static("x-webhook-url");
const WEBHOOK_FIELD: &str = "webhook_url";
/// Longest idempotency key or request id accepted.
const MAX_KEY: usize = 256;

/// Request headers not stored with a job: credentials (never at rest), framing, and what
/// intake itself consumed.
const NOT_STORED: [HeaderName; 10] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::TE,
    header::EXPECT,
    IDEMPOTENCY_KEY,
    X_WEBHOOK_URL,
];

/// What the async stage serves.
#[derive(Debug, PartialEq, Eq)]
pub enum Call {
    /// A job for the worker path `route`.
    Intake {
        /// The worker path.
        route: String,
    },
    /// A job's status.
    Status {
        /// The request id.
        id: String,
    },
}

impl Call {
    fn allow(&self) -> &'static str {
        match self {
            Call::Intake { .. } => "POST, OPTIONS",
            Call::Status { .. } => "GET, OPTIONS",
        }
    }
}

/// What `rest` (the path below the endpoint) is on an async endpoint; `None` for
/// synchronous traffic.
pub fn classify(endpoint: &Endpoint, rest: &str) -> Option<Call> {
    let settings = endpoint.config.async_.as_ref()?;
    if let Some(id) = rest.strip_prefix(STATUS_PREFIX) {
        return Some(Call::Status { id: id.to_string() });
    }
    if let Some(route) = rest.strip_prefix(ASYNC_PREFIX)
        && route.starts_with('/')
    {
        return Some(Call::Intake {
            route: route.to_string(),
        });
    }
    settings
        .routes
        .iter()
        .any(|r| r == rest)
        .then(|| Call::Intake {
            route: rest.to_string(),
        })
}

/// The CORS preflight answer: no token needed, as browsers send none on a preflight.
pub fn preflight(call: &Call, request: &Request<Incoming>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let allow = HeaderValue::from_static(call.allow());
    let asked = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static(
            "authorization, content-type, idempotency-key, x-webhook-url, x-request-id",
        ));
    let headers = response.headers_mut();
    headers.insert(header::ALLOW, allow.clone());
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, allow);
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

/// Serves an authenticated async call.
pub async fn serve(
    endpoint: &Arc<Endpoint>,
    call: Call,
    request: Request<Incoming>,
    record: &Record,
) -> Result<Response<ProxyBody>, ProxyError> {
    // An `OPTIONS` that got this far is not a preflight Portico answers for CORS (that
    // endpoint lists `cors_origins`, and this origin is not among them, or it is no
    // preflight): it asks what the path allows, and the answer says it without CORS.
    if request.method() == Method::OPTIONS {
        let mut response = Response::new(ProxyBody::full(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(call.allow()));
        return Ok(response);
    }
    let allowed = match call {
        Call::Intake { .. } => request.method() == Method::POST,
        Call::Status { .. } => matches!(*request.method(), Method::GET | Method::HEAD),
    };
    if !allowed {
        return Err(ProxyError::MethodNotAllowed {
            method: request.method().clone(),
            allow: call.allow(),
        });
    }
    // Configured at start; missing only if the async side failed to start.
    let jobs = endpoint.jobs().ok_or(ProxyError::QueueUnavailable)?;
    if endpoint.control.stopped() && matches!(call, Call::Intake { .. }) {
        // A stopped endpoint refuses work, queued or not (DESIGN.md §4).
        return Err(ProxyError::EndpointStopped {
            endpoint: endpoint.id().to_string(),
        });
    }
    match call {
        Call::Intake { route } => {
            let route = match request.uri().query() {
                Some(query) => format!("{route}?{query}"),
                None => route,
            };
            accept(endpoint, jobs, route, request, record).await
        }
        Call::Status { id } => status(endpoint, jobs, &id).await,
    }
}

/// Validates, persists, answers 202.
async fn accept(
    endpoint: &Arc<Endpoint>,
    jobs: &Jobs,
    route: String,
    request: Request<Incoming>,
    record: &Record,
) -> Result<Response<ProxyBody>, ProxyError> {
    let limit = endpoint.config.max_body_bytes;
    // The pipeline refused a declared length over the limit already; this counts the rest.
    let (head, body) = request.into_parts();
    let body = RequestBody::new(body, Rc::clone(&record.stats), limit);
    let (body, _) = body.buffer().await.map_err(|err| match err {
        BodyError::TooLarge => ProxyError::BodyTooLarge { limit },
        _ => ProxyError::BadRequest {
            reason: "the request body could not be read",
        },
    })?;
    let settings = &jobs.settings;
    let idempotency_key = text_header(&head.headers, &IDEMPOTENCY_KEY, "Idempotency-Key")?;
    let mut webhook = text_header(&head.headers, &X_WEBHOOK_URL, "X-Webhook-Url")?;
    let body = if is_json(&head.headers) {
        let (body, field) = without_webhook(&body)?;
        webhook = webhook.or(field);
        body
    } else {
        body
    };
    if let Some(url) = &webhook
        && !webhook::allowed(url, &settings.webhook_allow)
    {
        return Err(ProxyError::Invalid {
            code: "webhook_not_allowed",
            message: format!("webhook_url {url} is not allowed by this endpoint's webhook_allow"),
        });
    }
    let job = NewJob {
        id: new_job_id(),
        endpoint: endpoint.id().to_string(),
        route,
        headers: stored_headers(&head.headers),
        body,
        idempotency_key,
        webhook,
        ttl_ms: settings.ttl.as_millis() as u64,
    };
    let enqueued = jobs.queue.enqueue(job).await.map_err(|err| {
        tracing::error!(endpoint = %endpoint.id(), error = %err, "async intake failed");
        ProxyError::QueueUnavailable
    })?;
    let status = if enqueued.fresh {
        jobs.arrived();
        "queued"
    } else {
        match jobs.queue.state(&enqueued.id).await {
            Ok(Some(state)) => state.status.as_str(),
            _ => "queued",
        }
    };
    let location = jobs.results.location(endpoint.id(), &enqueued.id);
    let answer = json!({
        "request_id": enqueued.id,
        "response_location": location,
        "status": status,
    });
    let mut response = json_response(StatusCode::ACCEPTED, &answer);
    let status_url = format!(
        "/project/{}/endpoint/{}{STATUS_PREFIX}{}",
        endpoint.project(),
        endpoint.id(),
        enqueued.id
    );
    if let Ok(value) = HeaderValue::from_str(&status_url) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// The status document of a job of this endpoint.
async fn status(
    endpoint: &Endpoint,
    jobs: &Jobs,
    id: &str,
) -> Result<Response<ProxyBody>, ProxyError> {
    let not_found = || ProxyError::JobNotFound {
        id: id.chars().take(MAX_KEY).collect(),
    };
    if id.is_empty() || id.len() > MAX_KEY || id.contains('/') {
        return Err(not_found());
    }
    let state = jobs.queue.state(id).await.map_err(|err| {
        tracing::error!(endpoint = %endpoint.id(), error = %err, "async status read failed");
        ProxyError::QueueUnavailable
    })?;
    match state {
        Some(state) if state.endpoint == endpoint.id() => {
            let location = jobs.results.location(endpoint.id(), &state.id);
            Ok(json_response(
                StatusCode::OK,
                &document::status(&state, &location),
            ))
        }
        _ => Err(not_found()),
    }
}

/// A header's text, if present; refused when it is not sane text.
fn text_header(
    headers: &HeaderMap,
    name: &HeaderName,
    label: &str,
) -> Result<Option<String>, ProxyError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(text) if !text.is_empty() && text.len() <= 2048 => Ok(Some(text.to_string())),
        _ => Err(ProxyError::Invalid {
            code: "invalid_header",
            message: format!("{label} must be printable text of 1 to 2048 bytes"),
        }),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json") || mime.to_ascii_lowercase().ends_with("+json")
}

/// Checks that a JSON body parses and takes `webhook_url` out of it: the worker never sees
/// it. The body is re-serialized only when the field was there.
fn without_webhook(body: &Bytes) -> Result<(Bytes, Option<String>), ProxyError> {
    let mut value: Value = serde_json::from_slice(body).map_err(|err| ProxyError::Invalid {
        code: "invalid_json",
        message: format!("the request body is not valid JSON: {err}"),
    })?;
    let Some(field) = value.as_object_mut().and_then(|o| o.remove(WEBHOOK_FIELD)) else {
        return Ok((body.clone(), None));
    };
    let Value::String(url) = field else {
        return Err(ProxyError::Invalid {
            code: "invalid_webhook_url",
            message: "webhook_url must be a string".into(),
        });
    };
    Ok((Bytes::from(value.to_string()), Some(url)))
}

fn stored_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !NOT_STORED.contains(name) && !name.as_str().starts_with("proxy-"))
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
        .collect()
}

/// A new UUID v7 for each job: the client's `x-request-id` is not trusted to be unique.
fn new_job_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn json_response(status: StatusCode, value: &Value) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("location, x-request-id"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON bodies lose `webhook_url` and keep the rest; invalid JSON is a 400.
    #[test]
    fn webhook_field_is_removed() {
        let body = Bytes::from_static(br#"{"model":"m","webhook_url":"http://h/x"}"#);
        let (stripped, url) = without_webhook(&body).unwrap();
        assert_eq!(url.as_deref(), Some("http://h/x"));
        let value: Value = serde_json::from_slice(&stripped).unwrap();
        assert_eq!(value, json!({"model": "m"}));

        let plain = Bytes::from_static(br#"{"model":"m"}"#);
        assert_eq!(without_webhook(&plain).unwrap(), (plain.clone(), None));
        assert!(matches!(
            without_webhook(&Bytes::from_static(b"{nope")),
            Err(ProxyError::Invalid {
                code: "invalid_json",
                ..
            })
        ));
        assert!(without_webhook(&Bytes::from_static(br#"{"webhook_url":3}"#)).is_err());
    }

    /// Credentials and consumed headers are not stored; the rest is.
    #[test]
    fn stored_headers_leave_secrets_out() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k"));
        headers.insert("proxy-authorization", HeaderValue::from_static("x"));
        headers.insert("x-custom", HeaderValue::from_static("1"));
        let mut stored = stored_headers(&headers);
        stored.sort();
        assert_eq!(
            stored,
            [
                ("content-type".to_string(), "application/json".to_string()),
                ("x-custom".to_string(), "1".to_string())
            ]
        );
    }

    /// JSON content types, with parameters and `+json` suffixes.
    #[test]
    fn json_content_types() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        for (value, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/vnd.api+json", true),
            ("text/plain", false),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            assert_eq!(is_json(&headers), json, "{value}");
        }
    }
}
