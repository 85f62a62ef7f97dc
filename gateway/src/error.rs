//! The data plane's one error type and the one function that turns it into a response
//! (DESIGN.md §5: OpenAI-shaped JSON, internals hidden).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::ProxyBody;
use crate::metrics::UpstreamErrorKind;

/// Why a request did not get a worker's answer. Variants say which side failed: the client
/// (bad request), the configuration (no route), or the worker.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Client: no project/endpoint route matches the path.
    #[error("no endpoint at {path}")]
    NoRoute {
        /// The request path, for the message.
        path: String,
    },
    /// Client: a request Portico will not forward.
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Client: no valid project token.
    #[error("{0}")]
    Unauthorized(AuthFailure),
    /// Client: the endpoint's security groups do not admit this source on this port. The
    /// message says nothing more: a denied source learns nothing about the endpoint.
    #[error("access denied")]
    Denied,
    /// Client: the body is larger than the endpoint's `max_body_bytes`.
    #[error("request body is larger than the endpoint's limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Worker: no worker of the endpoint is healthy.
    #[error("no healthy worker for endpoint {endpoint}")]
    NoHealthyWorker {
        /// Endpoint id.
        endpoint: String,
    },
    /// Worker: the endpoint is waking and already holds `scaling.max_pending` requests.
    #[error("too many requests are waiting for endpoint {endpoint} to wake; retry later")]
    TooManyPending {
        /// Endpoint id.
        endpoint: String,
    },
    /// Worker: no worker became ready within `scaling.cold_start_timeout_seconds`.
    #[error("no worker of endpoint {endpoint} became ready in time; retry later")]
    NoWorkerReady {
        /// Endpoint id.
        endpoint: String,
    },
    /// Configuration: an operator stopped the endpoint.
    #[error("endpoint {endpoint} is stopped")]
    EndpointStopped {
        /// Endpoint id.
        endpoint: String,
    },
    /// Worker: it could not be reached, or failed before answering.
    #[error("the worker could not be reached or failed before answering")]
    WorkerUnavailable {
        /// What failed, for metrics and logs.
        kind: UpstreamErrorKind,
    },
    /// Worker: no response headers within `timeouts.first_byte_seconds`.
    #[error("the worker did not answer in time")]
    WorkerTimeout,
    /// Client: a well-framed request whose content is refused (malformed JSON, a webhook
    /// target not allowed). The connection stays usable.
    #[error("{message}")]
    Invalid {
        /// The stable code (`invalid_json`, `webhook_not_allowed`, …).
        code: &'static str,
        /// What is wrong, for the client.
        message: String,
    },
    /// Client: the method is not served on this path (async routes take POST and OPTIONS).
    #[error("method {method} is not allowed here; use {allow}")]
    MethodNotAllowed {
        /// The method the client used.
        method: http::Method,
        /// The `Allow` header's value.
        allow: &'static str,
    },
    /// Client: no async job with this id is kept for the endpoint.
    #[error("no async request {id} on this endpoint")]
    JobNotFound {
        /// The request id asked for.
        id: String,
    },
    /// The async queue could not persist or read a job; nothing was accepted.
    #[error("the async queue is unavailable; retry later")]
    QueueUnavailable,
}

/// Why a request has no valid project token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No Authorization header, or an empty one.
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    /// An Authorization header that is not one well-formed `Bearer <token>`.
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    /// A well-formed token that is not one of the project's.
    #[error("invalid bearer token")]
    InvalidToken,
}

impl AuthFailure {
    /// The `WWW-Authenticate` challenge (RFC 6750 §3).
    fn challenge(self) -> &'static str {
        match self {
            AuthFailure::Missing => "Bearer realm=\"portico\"",
            AuthFailure::Malformed(_) => "Bearer realm=\"portico\", error=\"invalid_request\"",
            AuthFailure::InvalidToken => "Bearer realm=\"portico\", error=\"invalid_token\"",
        }
    }
}

impl ProxyError {
    /// The status code the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::Denied => StatusCode::FORBIDDEN,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoHealthyWorker { .. }
            | ProxyError::NoWorkerReady { .. }
            | ProxyError::EndpointStopped { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::TooManyPending { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::WorkerUnavailable { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::WorkerTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::JobNotFound { .. } => StatusCode::NOT_FOUND,
            ProxyError::QueueUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// OpenAI's error `type` for this error.
    fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. } | ProxyError::JobNotFound { .. } => "not_found_error",
            ProxyError::Unauthorized(_) => "authentication_error",
            ProxyError::Denied => "permission_error",
            ProxyError::BadRequest { .. }
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::Invalid { .. }
            | ProxyError::MethodNotAllowed { .. } => "invalid_request_error",
            ProxyError::TooManyPending { .. } => "rate_limit_error",
            ProxyError::NoHealthyWorker { .. }
            | ProxyError::NoWorkerReady { .. }
            | ProxyError::EndpointStopped { .. }
            | ProxyError::WorkerUnavailable { .. }
            | ProxyError::WorkerTimeout
            | ProxyError::QueueUnavailable => "server_error",
        }
    }

    /// A stable machine-readable `code`, also written to the access log.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. } => "endpoint_not_found",
            ProxyError::BadRequest { .. } => "bad_request",
            ProxyError::Unauthorized(AuthFailure::Missing) => "missing_token",
            ProxyError::Unauthorized(AuthFailure::Malformed(_)) => "malformed_authorization",
            ProxyError::Unauthorized(AuthFailure::InvalidToken) => "invalid_token",
            ProxyError::Denied => "denied_by_security_group",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::NoHealthyWorker { .. } => "no_healthy_worker",
            ProxyError::TooManyPending { .. } => "too_many_pending",
            ProxyError::NoWorkerReady { .. } => "no_worker_ready",
            ProxyError::EndpointStopped { .. } => "endpoint_stopped",
            ProxyError::WorkerUnavailable { .. } => "worker_unavailable",
            ProxyError::WorkerTimeout => "worker_timeout",
            ProxyError::Invalid { code, .. } => code,
            ProxyError::MethodNotAllowed { .. } => "method_not_allowed",
            ProxyError::JobNotFound { .. } => "request_not_found",
            ProxyError::QueueUnavailable => "queue_unavailable",
        }
    }
}

impl ProxyError {
    /// `Retry-After` seconds for answers a client should retry.
    fn retry_after(&self) -> Option<&'static str> {
        match self {
            ProxyError::NoHealthyWorker { .. }
            | ProxyError::TooManyPending { .. }
            | ProxyError::QueueUnavailable => Some("1"),
            // The workers are still loading: a retry at once would be held again.
            ProxyError::NoWorkerReady { .. } => Some("10"),
            ProxyError::EndpointStopped { .. } => Some("60"),
            _ => None,
        }
    }
}

/// The one mapping from [`ProxyError`] to status code and JSON body, as the data plane
/// sends it.
pub fn error_response(err: &ProxyError) -> Response<ProxyBody> {
    error_answer(err).map(ProxyBody::full)
}

/// The same answer with its body as bytes (the admin listener sends it through axum).
pub fn error_answer(err: &ProxyError) -> Response<Bytes> {
    let body = serde_json::json!({
        "error": { "message": err.to_string(), "type": err.kind(), "code": err.code() }
    });
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = err.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(seconds) = err.retry_after() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
    }
    if let ProxyError::Unauthorized(failure) = err {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(failure.challenge()),
        );
    }
    if let ProxyError::MethodNotAllowed { allow, .. } = err {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if matches!(err, ProxyError::BadRequest { .. }) {
        // The connection's framing can no longer be trusted.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    async fn json(response: Response<ProxyBody>) -> serde_json::Value {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    /// Every error maps to its status and an OpenAI-shaped JSON body that hides internals.
    #[tokio::test]
    async fn errors_are_openai_shaped() {
        let cases = [
            (
                ProxyError::NoRoute { path: "/x".into() },
                404,
                "endpoint_not_found",
            ),
            (ProxyError::BadRequest { reason: "r" }, 400, "bad_request"),
            (
                ProxyError::Unauthorized(AuthFailure::Missing),
                401,
                "missing_token",
            ),
            (
                ProxyError::Unauthorized(AuthFailure::Malformed("m")),
                401,
                "malformed_authorization",
            ),
            (
                ProxyError::Unauthorized(AuthFailure::InvalidToken),
                401,
                "invalid_token",
            ),
            (ProxyError::Denied, 403, "denied_by_security_group"),
            (ProxyError::BodyTooLarge { limit: 1 }, 413, "body_too_large"),
            (
                ProxyError::NoHealthyWorker {
                    endpoint: "e".into(),
                },
                503,
                "no_healthy_worker",
            ),
            (
                ProxyError::WorkerUnavailable {
                    kind: UpstreamErrorKind::Connect,
                },
                502,
                "worker_unavailable",
            ),
            (ProxyError::WorkerTimeout, 504, "worker_timeout"),
            (
                ProxyError::TooManyPending {
                    endpoint: "e".into(),
                },
                429,
                "too_many_pending",
            ),
            (
                ProxyError::NoWorkerReady {
                    endpoint: "e".into(),
                },
                503,
                "no_worker_ready",
            ),
            (
                ProxyError::EndpointStopped {
                    endpoint: "e".into(),
                },
                503,
                "endpoint_stopped",
            ),
        ];
        for (err, status, code) in cases {
            let response = error_response(&err);
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let json = json(response).await;
            assert_eq!(json["error"]["code"], code);
            assert!(json["error"]["type"].is_string());
            assert_eq!(json["error"]["message"], err.to_string());
        }
    }

    /// 503 tells clients when to retry; 400 closes the connection.
    #[test]
    fn headers_per_status() {
        let unavailable = error_response(&ProxyError::NoHealthyWorker {
            endpoint: "e".into(),
        });
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "1");
        for err in [
            ProxyError::TooManyPending {
                endpoint: "e".into(),
            },
            ProxyError::NoWorkerReady {
                endpoint: "e".into(),
            },
            ProxyError::EndpointStopped {
                endpoint: "e".into(),
            },
        ] {
            assert!(
                error_response(&err)
                    .headers()
                    .contains_key(header::RETRY_AFTER)
            );
        }
        assert!(
            !error_response(&ProxyError::WorkerTimeout)
                .headers()
                .contains_key(header::RETRY_AFTER)
        );
        let bad = error_response(&ProxyError::BadRequest { reason: "r" });
        assert_eq!(bad.headers()[header::CONNECTION], "close");
        let invalid = error_response(&ProxyError::Unauthorized(AuthFailure::InvalidToken));
        assert_eq!(
            invalid.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"portico\", error=\"invalid_token\""
        );
        let missing = error_response(&ProxyError::Unauthorized(AuthFailure::Missing));
        assert!(
            missing.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let denied = error_response(&ProxyError::Denied);
        assert!(!denied.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
