//! CORS for browsers calling an endpoint from another origin (the console's playground, a
//! web app), on endpoints with `cors_origins`: Portico answers the preflight itself and
//! marks every answer to an allowed origin, its own errors included, so that the page can
//! read them. Endpoints without `cors_origins` leave CORS to their workers.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::ProxyBody;
use crate::endpoint::Endpoint;

/// Methods a preflight may ask for.
const METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
/// Headers asked for when the preflight names none.
const HEADERS: &str = "authorization, content-type, x-request-id";
/// Response headers a page may read besides the CORS-safelisted ones.
const EXPOSED: &str = "x-request-id, retry-after, location";

/// The answer to a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) from an allowed origin; `None` for any other request,
/// which goes on through the pipeline.
pub fn preflight<B>(endpoint: &Endpoint, request: &Request<B>) -> Option<Response<ProxyBody>> {
    if request.method() != Method::OPTIONS
        || !request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    let origin = request.headers().get(header::ORIGIN)?;
    if !endpoint.config.cors.allows(origin.as_bytes()) {
        return None;
    }
    let mut response = Response::new(ProxyBody::full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let asked = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static(HEADERS));
    let headers = response.headers_mut();
    allow_origin(origin.clone(), headers);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    Some(response)
}

/// Marks an answer to a request from `origin` as readable by that origin, when the
/// endpoint allows it (replacing whatever the worker said). A worker's
/// `Access-Control-Allow-Credentials` is removed: allowed origins may read answers to the
/// bearer token they send, never to cookies the browser adds.
pub fn mark(endpoint: &Endpoint, origin: HeaderValue, headers: &mut HeaderMap) {
    if !endpoint.config.cors.allows(origin.as_bytes()) {
        return;
    }
    headers.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
    allow_origin(origin, headers);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
}

fn allow_origin(origin: HeaderValue, headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    // The answer depends on the origin: caches keep one per origin.
    let varies = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|name| name.trim().eq_ignore_ascii_case("origin"))
        })
    });
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;

    fn endpoint(cors: &str) -> Arc<Endpoint> {
        let text = format!(
            "[server]\nadmin_listen = \"127.0.0.1:0\"\n[[listener]]\nname = \"l\"\n\
             address = \"127.0.0.1:0\"\n[[project]]\nid = \"p\"\n[[endpoint]]\nid = \"e\"\n\
             project = \"p\"\npublic = true\n{cors}\n[endpoint.workers]\nkind = \"static\"\n\
             urls = [\"http://127.0.0.1:9\"]\n"
        );
        let config = Config::from_toml_str(&text, Path::new(".")).expect("valid config");
        Arc::new(Endpoint::new(
            &config,
            config.endpoints[0].clone(),
            &["l".to_string()],
        ))
    }

    fn options(origin: &str) -> Request<()> {
        Request::options("/project/p/endpoint/e/v1/chat/completions")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization, content-type",
            )
            .body(())
            .unwrap()
    }

    /// A preflight from a listed origin is answered with that origin and the asked headers;
    /// from another origin, or on an endpoint without `cors_origins`, it goes to the worker.
    #[test]
    fn preflights_from_listed_origins_are_answered() {
        let listed = endpoint(r#"cors_origins = ["http://console.example:9090"]"#);
        let answer = preflight(&listed, &options("http://CONSOLE.example:9090")).unwrap();
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        let headers = answer.headers();
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://CONSOLE.example:9090"
        );
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization, content-type"
        );
        assert_eq!(headers[header::VARY], "origin");
        assert!(preflight(&listed, &options("http://other.example")).is_none());
        assert!(preflight(&endpoint(""), &options("http://console.example:9090")).is_none());
        let plain = Request::options("/x")
            .header(header::ORIGIN, "http://a")
            .body(())
            .unwrap();
        assert!(preflight(&endpoint(r#"cors_origins = ["*"]"#), &plain).is_none());
    }

    /// Answers to an allowed origin are marked; the worker's own CORS answer is replaced; other
    /// origins are left alone.
    #[test]
    fn answers_to_allowed_origins_are_marked() {
        let any = endpoint(r#"cors_origins = ["*"]"#);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("x"),
        );
        mark(
            &any,
            HeaderValue::from_static("https://app.example"),
            &mut headers,
        );
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(headers[header::ACCESS_CONTROL_EXPOSE_HEADERS], EXPOSED);
        let mut untouched = HeaderMap::new();
        mark(
            &endpoint(""),
            HeaderValue::from_static("https://app.example"),
            &mut untouched,
        );
        assert!(untouched.is_empty());
    }
}
