//! The web console's side of the admin listener, through the real binary: the embedded
//! pages load without the admin token (with their security headers), everything under
//! `/admin` still needs it, endpoints name their URLs on the data listeners, and
//! `/admin/series` holds sampled points with its bad queries refused.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::{Http1, TestGateway, TestWorker, endpoint_config, eventually, http};

const ADMIN_TOKEN: &str = "console-test-admin-token";

fn config(worker: &TestWorker) -> String {
    endpoint_config(
        "e1",
        &format!(
            "admin_token_sha256 = \"{}\"",
            gateway::token::sha256_hex(ADMIN_TOKEN)
        ),
        r#"cors_origins = ["http://console.test:9090"]"#,
        &format!("kind = \"static\"\nurls = [\"{}\"]", worker.url()),
        "",
    )
}

/// `GET path` on the admin listener, with the admin token when `token`.
fn admin_get(addr: SocketAddr, path: &str, token: bool) -> (u16, Vec<(String, String)>, String) {
    let authorization = match token {
        true => format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"),
        false => String::new(),
    };
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{authorization}\r\n"),
    )
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|err| panic!("not JSON ({err}): {body}"))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The console loads without a token, with a strict content security policy; a file that
/// is not part of it is a JSON 404; `/` leads to `/ui/`; the API behind it needs the token.
#[test]
fn the_console_loads_without_the_token_and_the_api_still_needs_it() {
    let worker = TestWorker::start(&[]);
    let gateway = TestGateway::start(&config(&worker));
    let admin = gateway.addr("admin");

    let (status, headers, body) = admin_get(admin, "/ui/", false);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(body.contains("<html"), "{body}");
    let csp = header(&headers, "content-security-policy").expect("a CSP");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    let etag = header(&headers, "etag").expect("an ETag").to_string();
    let (status, _, _) = http(
        admin,
        &format!(
            "GET /ui/ HTTP/1.1\r\nHost: test\r\nConnection: close\r\nIf-None-Match: {etag}\r\n\r\n"
        ),
    );
    assert_eq!(status, 304);

    for missing in ["/ui/no-such-file.js", "/ui/../Cargo.toml", "/ui/.secret"] {
        let (status, _, body) = admin_get(admin, missing, false);
        assert_eq!(status, 404, "{missing}: {body}");
        assert_eq!(json(&body)["error"]["code"], "not_found", "{missing}");
    }
    for path in ["/", "/ui"] {
        let (status, headers, _) = admin_get(admin, path, false);
        assert_eq!(status, 303, "{path}");
        assert_eq!(header(&headers, "location"), Some("/ui/"), "{path}");
    }

    for path in ["/admin/endpoints", "/admin/series"] {
        let (status, _, body) = admin_get(admin, path, false);
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(json(&body)["error"]["code"], "missing_token");
    }
}

/// An endpoint names its base URL on each data listener serving it (the bound port) and
/// its CORS origins; the series gets a point per endpoint at once and every few seconds,
/// each with the endpoint's state; bad queries are refused.
#[test]
fn endpoints_name_their_urls_and_series_are_sampled() {
    let worker = TestWorker::start(&[]);
    let gateway = TestGateway::start(&config(&worker));
    let admin = gateway.addr("admin");
    let public = gateway.addr("public");

    let (status, _, body) = admin_get(admin, "/admin/endpoints/e1", true);
    assert_eq!(status, 200, "{body}");
    let endpoint = json(&body);
    assert_eq!(
        endpoint["urls"],
        serde_json::json!([format!("http://{public}/project/p1/endpoint/e1")])
    );
    assert_eq!(
        endpoint["cors_origins"],
        serde_json::json!(["http://console.test:9090"])
    );

    // Traffic shows in a later point's rolling minute, and so does the scaler's answer to it
    // (a point taken before the controller's next tick still shows 0 workers wanted).
    let mut client = Http1::connect(public);
    for _ in 0..5 {
        let (status, _) = client.get("/project/p1/endpoint/e1/echo");
        assert_eq!(status, 200);
    }
    let points = eventually("a point with the traffic", Duration::from_secs(15), || {
        let (status, _, body) = admin_get(admin, "/admin/endpoints/e1/series?minutes=1", true);
        assert_eq!(status, 200, "{body}");
        let answer = json(&body);
        assert_eq!(answer["interval_seconds"], 5);
        let points = answer["points"].as_array()?.clone();
        points
            .last()
            .is_some_and(|p| p["rps"].as_f64().unwrap_or(0.0) > 0.0 && p["desired"] == 1)
            .then_some(points)
    });
    let last = points.last().unwrap();
    assert_eq!(last["ready"], 1, "{last}");
    assert_eq!(last["error_rate"], 0.0, "{last}");
    assert!(last["p95_ms"].as_f64().is_some(), "{last}");
    assert!(last["async_jobs"].is_null(), "{last}");
    assert!(
        last["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{last}"
    );

    let (status, _, body) = admin_get(admin, "/admin/series", true);
    assert_eq!(status, 200, "{body}");
    let all = json(&body);
    assert_eq!(all["endpoints"][0]["endpoint"], "e1");
    assert!(!all["endpoints"][0]["points"].as_array().unwrap().is_empty());

    for bad in ["minutes=0", "minutes=16", "minutes=x", "hours=1"] {
        let (status, _, body) = admin_get(admin, &format!("/admin/series?{bad}"), true);
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(json(&body)["error"]["code"], "invalid_query", "{bad}");
    }
    let (status, _, body) = admin_get(admin, "/admin/endpoints/nope/series", true);
    assert_eq!(status, 404, "{body}");
    assert_eq!(json(&body)["error"]["code"], "endpoint_not_found");
}

/// Orders from a browser page on another origin are refused before the token is looked at
/// (a form POST needs no preflight); the console's own origin, and clients that send no
/// `Origin` (the CLI), are served.
#[test]
fn orders_from_other_origins_are_refused() {
    let worker = TestWorker::start(&[]);
    let gateway = TestGateway::start(&config(&worker));
    let admin = gateway.addr("admin");
    let post = |extra: &str| {
        http(
            admin,
            &format!(
                "POST /admin/reload HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\
                 Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\n{extra}\r\n"
            ),
        )
    };
    for (what, extra) in [
        ("another origin", "Origin: http://evil.test\r\n".to_string()),
        ("a sandboxed page", "Origin: null\r\n".to_string()),
        ("another site", "Sec-Fetch-Site: cross-site\r\n".to_string()),
    ] {
        let (status, _, body) = post(&extra);
        assert_eq!(status, 403, "{what}: {body}");
        assert_eq!(json(&body)["error"]["code"], "cross_origin", "{what}");
    }
    // The console's own origin and clients without `Origin` get past the check.
    for extra in [
        format!("Origin: http://{admin}\r\nSec-Fetch-Site: same-origin\r\n"),
        String::new(),
    ] {
        let (status, _, body) = post(&extra);
        assert_ne!(status, 403, "{extra:?}: {body}");
    }
    let (status, _, body) = http(
        admin,
        &format!(
            "GET /admin/endpoints HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\
             Authorization: Bearer {ADMIN_TOKEN}\r\nOrigin: http://evil.test\r\n\r\n"
        ),
    );
    assert_eq!(status, 200, "reads are not orders: {body}");
}
