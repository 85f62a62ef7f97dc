//! The web console: the files of `gateway/ui/`, embedded in the binary by `build.rs`, served
//! at `/ui/` on the admin listener. The pages need no token to load; they ask for the admin
//! token and send it with every API call.
//!
//! `PORTICO_UI_DIR=<dir>` serves the files from that directory instead, read on each
//! request (for working on the console without rebuilding).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::Admin;
use super::endpoints::error;

/// Every file of `gateway/ui/`: (path relative to it, contents).
const ASSETS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// Only the console's own scripts and styles run; the playground may call data listeners
/// on other origins.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self' http: https:; frame-ancestors 'none'; \
base-uri 'none'; form-action 'none'";

/// The routes of the console: `/` and `/ui` lead to `/ui/`.
pub fn routes() -> Router<Admin> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move {
                serve(&path, &headers)
            }),
        )
}

/// Whether `path` is a console page or asset (served without the admin token).
pub fn is_console(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

struct Asset {
    body: &'static [u8],
    etag: HeaderValue,
}

fn embedded() -> &'static HashMap<&'static str, Asset> {
    static TABLE: OnceLock<HashMap<&'static str, Asset>> = OnceLock::new();
    TABLE.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(name, body)| {
                (
                    *name,
                    Asset {
                        body,
                        etag: etag(body),
                    },
                )
            })
            .collect()
    })
}

fn etag(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
}

fn override_dir() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| std::env::var_os("PORTICO_UI_DIR").map(PathBuf::from))
        .as_ref()
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let missing = || error(StatusCode::NOT_FOUND, "not_found", "no such console file");
    if path
        .split('/')
        .any(|part| part.is_empty() || part.starts_with('.'))
    {
        return missing();
    }
    let (body, etag): (std::borrow::Cow<'static, [u8]>, HeaderValue) = match override_dir() {
        Some(dir) => match std::fs::read(dir.join(path)) {
            Ok(body) => {
                let tag = etag(&body);
                (body.into(), tag)
            }
            Err(_) => return missing(),
        },
        None => match embedded().get(path) {
            Some(asset) => (asset.body.into(), asset.etag.clone()),
            None => return missing(),
        },
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.as_bytes() == etag.as_bytes());
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_owned().into_response()
    };
    let answer = response.headers_mut();
    answer.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    answer.insert(header::ETAG, etag);
    // Revalidated on every load: a new binary serves its own console at once.
    answer.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    answer.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    answer.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    answer.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_is_embedded() {
        assert!(embedded().contains_key("index.html"));
    }

    #[test]
    fn paths_outside_the_console_are_refused() {
        let headers = HeaderMap::new();
        for path in ["../Cargo.toml", "a/../../x", ".hidden", "a//b", ""] {
            assert_eq!(
                serve(path, &headers).status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        assert_eq!(serve("index.html", &headers).status(), StatusCode::OK);
    }

    #[test]
    fn an_unchanged_file_is_not_sent_again() {
        let first = serve("index.html", &HeaderMap::new());
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, first.headers()[header::ETAG].clone());
        assert_eq!(
            serve("index.html", &headers).status(),
            StatusCode::NOT_MODIFIED
        );
    }
}
