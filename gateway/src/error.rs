//! The data plane's one error type and the one function that turns it into a response
//! (DESIGN.md §5: OpenAI-shaped JSON, internals hidden).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// Why a request did not get a worker's answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No project/endpoint route matches the path.
    #[error("no endpoint at {path}")]
    NoRoute {
        /// The request path, for the message.
        path: String,
    },
}

impl ProxyError {
    /// The status code the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
        }
    }

    /// OpenAI's error `type` for this error.
    fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. } => "not_found_error",
        }
    }

    /// A stable machine-readable `code`.
    fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. } => "endpoint_not_found",
        }
    }
}

/// The one mapping from [`ProxyError`] to status code and JSON body.
pub fn error_response(err: &ProxyError) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "error": { "message": err.to_string(), "type": err.kind(), "code": err.code() }
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = err.status();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    /// An unknown route is a 404 with an OpenAI-shaped JSON body.
    #[tokio::test]
    async fn no_route_is_openai_shaped_404() {
        let response = error_response(&ProxyError::NoRoute { path: "/x".into() });
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["type"], "not_found_error");
        assert_eq!(json["error"]["code"], "endpoint_not_found");
        assert_eq!(json["error"]["message"], "no endpoint at /x");
    }
}
