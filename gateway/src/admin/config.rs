//! `POST /admin/reload` (re-read the config file and apply it, all or nothing) and
//! `GET /admin/config` (the config in force, secrets redacted).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::Admin;
use crate::reload::ReloadError;

/// What replaces a secret.
const REDACTED: &str = "<redacted>";

/// The routes.
pub fn routes() -> Router<Admin> {
    Router::new()
        .route("/admin/reload", post(reload))
        .route("/admin/config", get(config))
}

async fn reload(State(admin): State<Admin>) -> Response {
    let reloader = std::sync::Arc::clone(&admin.reloader);
    // Reading files and loading certificates block.
    let outcome = tokio::task::spawn_blocking(move || reloader.reload_file()).await;
    if !matches!(outcome, Ok(Err(ReloadError::NoFile))) {
        crate::reload::count("admin_api", matches!(outcome, Ok(Ok(_))));
    }
    match outcome {
        Ok(Ok(report)) => axum::Json(report.to_json()).into_response(),
        Ok(Err(err)) => {
            let problems = match &err {
                ReloadError::Config(config) => config.problems(),
                other => vec![other.to_string()],
            };
            let (status, code) = match &err {
                ReloadError::NoFile => (StatusCode::CONFLICT, "no_config_file"),
                _ => (StatusCode::BAD_REQUEST, "invalid_config"),
            };
            let message = format!(
                "the configuration was not reloaded; the running one is unchanged: {}",
                problems.join("; ")
            );
            (
                status,
                axum::Json(json!({
                    "error": {
                        "message": message,
                        "type": "invalid_request_error",
                        "code": code,
                        "problems": problems,
                    }
                })),
            )
                .into_response()
        }
        Err(_) => super::endpoints::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload_failed",
            "the reload task failed",
        ),
    }
}

async fn config(State(admin): State<Admin>) -> Response {
    let source = admin.reloader.running_source();
    let mut document = serde_json::to_value(&source).unwrap_or(Value::Null);
    redact(&mut document, false);
    axum::Json(json!({ "path": admin.reloader.path(), "config": document })).into_response()
}

/// Replaces every secret in `value`: token hashes, credentials, passwords, the values of
/// worker environment variables whose names suggest a secret, and the userinfo of URLs.
/// `secret_context` is set below a key that holds secrets (`env` maps).
fn redact(value: &mut Value, secret_context: bool) {
    match value {
        Value::Object(map) => {
            for (key, entry) in map.iter_mut() {
                if secret_key(key) || (secret_context && entry.is_string() && sensitive(key)) {
                    *entry = Value::String(REDACTED.into());
                } else {
                    redact(entry, key == "env");
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| redact(item, false)),
        Value::String(text) => {
            if let Some(cleaned) = without_userinfo(text) {
                *text = cleaned;
            }
        }
        _ => {}
    }
}

/// Keys whose value is always secret.
fn secret_key(key: &str) -> bool {
    matches!(
        key,
        "sha256"
            | "admin_token_sha256"
            | "secret_access_key"
            | "access_key_id"
            | "session_token"
            | "password"
            | "token"
    )
}

/// Names of environment variables that hold secrets (`HF_TOKEN`, `API_KEY`, …).
fn sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "key",
        "credential",
        "auth",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// `scheme://user:pass@host…` → `scheme://<redacted>@host…`; `None` when there is no userinfo.
fn without_userinfo(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some(format!("{scheme}://{REDACTED}@{}", &rest[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_the_rest_kept() {
        let mut value = json!({
            "server": { "admin_token_sha256": "ab", "state_dir": "./data" },
            "project": [{ "id": "p", "tokens": [{ "name": "n", "sha256": "cd" }] }],
            "object_store": { "url": "s3://bucket", "secret_access_key": "s", "access_key_id": "a" },
            "endpoint": [{
                "id": "e",
                "async": { "queue": "redis://:hunter2@10.0.0.1:6379/0" },
                "workers": { "env": { "HF_TOKEN": "t", "MODEL": "m", "API_KEY": "k" } },
            }],
            "smtp": { "password": "p", "host": "mail" },
        });
        redact(&mut value, false);
        assert_eq!(value["server"]["admin_token_sha256"], REDACTED);
        assert_eq!(value["server"]["state_dir"], "./data");
        assert_eq!(value["project"][0]["tokens"][0]["sha256"], REDACTED);
        assert_eq!(value["project"][0]["tokens"][0]["name"], "n");
        assert_eq!(value["object_store"]["secret_access_key"], REDACTED);
        assert_eq!(value["object_store"]["url"], "s3://bucket");
        assert_eq!(
            value["endpoint"][0]["async"]["queue"],
            "redis://<redacted>@10.0.0.1:6379/0"
        );
        let env = &value["endpoint"][0]["workers"]["env"];
        assert_eq!(env["HF_TOKEN"], REDACTED);
        assert_eq!(env["API_KEY"], REDACTED);
        assert_eq!(env["MODEL"], "m");
        assert_eq!(value["smtp"]["password"], REDACTED);
    }

    #[test]
    fn userinfo_only_in_the_authority() {
        assert_eq!(without_userinfo("http://a/b@c"), None);
        assert_eq!(without_userinfo("plain"), None);
        assert_eq!(
            without_userinfo("rediss://u:p@h:1").as_deref(),
            Some("rediss://<redacted>@h:1")
        );
    }
}
