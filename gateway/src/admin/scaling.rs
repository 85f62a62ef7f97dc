//! `PATCH /admin/endpoints/{id}/scaling`: change an endpoint's scaling settings while it
//! runs. The body names only the keys that change (those of `[endpoint.scaling]`); the
//! result is checked exactly as the config file is, applied at once without restarting
//! anything, and recorded as an `updated` event.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::Admin;
use super::endpoints::{describe, error, find};
use crate::admin_state::SavedScaling;
use crate::config::file::FileScaling;
use crate::config::{self, WorkerKind};

pub(super) async fn update(
    State(admin): State<Admin>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let endpoint = match find(&admin, &id) {
        Ok(endpoint) => endpoint,
        Err(missing) => return missing.into_response(),
    };
    if matches!(endpoint.config.workers.kind, WorkerKind::Static { .. }) {
        return error(
            StatusCode::CONFLICT,
            "fixed_workers",
            "the endpoint's workers are static URLs: there is no scaling to change",
        );
    }
    let patch = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(patch)) if !patch.is_empty() => patch,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "expected a JSON object with at least one key of [endpoint.scaling]",
            );
        }
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                &format!("the body is not JSON: {err}"),
            );
        }
    };
    let mut file = FileScaling::from(endpoint.control.settings().as_ref());
    let mut problems = merge(&mut file, &patch);
    if problems.is_empty() {
        match config::scaling_settings("scaling", &file) {
            Ok(settings) => {
                return match endpoint
                    .control
                    .update_settings(settings, "the admin API")
                    .await
                {
                    Ok(_) => {
                        let saved = SavedScaling {
                            settings: file,
                            over: FileScaling::from(&endpoint.config.scaling),
                        };
                        if let Err(err) = admin.state.save_scaling(endpoint.id(), saved).await {
                            tracing::warn!(endpoint = endpoint.id(), error = %err, "the scaling change applies here but was not saved");
                        }
                        axum::Json(describe(&admin, &endpoint)).into_response()
                    }
                    Err(gone) => error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "shutting_down",
                        &gone.to_string(),
                    ),
                };
            }
            Err(found) => problems.extend(found.iter().map(ToString::to_string)),
        }
    }
    invalid(&problems)
}

/// A 400 listing every problem.
fn invalid(problems: &[String]) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "error": {
                "message": format!("the scaling settings were not changed: {}", problems.join("; ")),
                "type": "invalid_request_error",
                "code": "invalid_scaling",
                "problems": problems,
            }
        })),
    )
        .into_response()
}

/// Applies the keys of `patch` to `file`; every key that is unknown or of the wrong type
/// is a problem (`scaling.<key>: …`). A `metric` other than `custom` drops a
/// `custom_metric` the patch does not set; a `custom_metric` alone implies `custom`.
fn merge(file: &mut FileScaling, patch: &Map<String, Value>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut bad = |key: &str, message: &str| problems.push(format!("scaling.{key}: {message}"));
    for (key, value) in patch {
        let whole = || value.as_u64();
        let small = || value.as_u64().and_then(|n| u32::try_from(n).ok());
        match key.as_str() {
            "min_workers" => small().map_or_else(
                || bad(key, "expected a whole number"),
                |n| file.min_workers = n,
            ),
            "max_workers" => small().map_or_else(
                || bad(key, "expected a whole number"),
                |n| file.max_workers = n,
            ),
            "max_pending" => small().map_or_else(
                || bad(key, "expected a whole number"),
                |n| file.max_pending = n,
            ),
            "target" => value
                .as_f64()
                .map_or_else(|| bad(key, "expected a number"), |x| file.target = x),
            "panic_threshold" => {
                value.as_f64().map_or_else(
                    || bad(key, "expected a number"),
                    |x| file.panic_threshold = x,
                );
            }
            "metric" => match value.as_str() {
                Some(metric) => {
                    file.metric = metric.to_string();
                    if metric != "custom" && !patch.contains_key("custom_metric") {
                        file.custom_metric = None;
                    }
                }
                None => bad(key, "expected a string"),
            },
            "custom_metric" => match value {
                Value::Null => file.custom_metric = None,
                Value::String(name) => {
                    file.custom_metric = Some(name.clone());
                    if !patch.contains_key("metric") {
                        file.metric = "custom".into();
                    }
                }
                _ => bad(key, "expected a string or null"),
            },
            _ => {
                let Some(field) = seconds_field(file, key) else {
                    bad(
                        key,
                        &format!(
                            "unknown key; expected one of {}",
                            FileScaling::KEYS.join(", ")
                        ),
                    );
                    continue;
                };
                match whole() {
                    Some(seconds) => *field = seconds,
                    None => bad(key, "expected a whole number of seconds"),
                }
            }
        }
    }
    problems
}

fn seconds_field<'a>(file: &'a mut FileScaling, key: &str) -> Option<&'a mut u64> {
    Some(match key {
        "idle_timeout_seconds" => &mut file.idle_timeout_seconds,
        "initial_cooldown_seconds" => &mut file.initial_cooldown_seconds,
        "stable_window_seconds" => &mut file.stable_window_seconds,
        "panic_window_seconds" => &mut file.panic_window_seconds,
        "cold_start_timeout_seconds" => &mut file.cold_start_timeout_seconds,
        "waking_keepalive_seconds" => &mut file.waking_keepalive_seconds,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patched(patch: Value) -> (FileScaling, Vec<String>) {
        let mut file = FileScaling::default();
        let problems = merge(&mut file, patch.as_object().expect("an object"));
        (file, problems)
    }

    #[test]
    fn keys_are_applied() {
        let (file, problems) = patched(json!({
            "min_workers": 1, "max_workers": 3, "target": 2.5, "idle_timeout_seconds": 30,
            "initial_cooldown_seconds": 0, "panic_threshold": 3, "max_pending": 7,
        }));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!((file.min_workers, file.max_workers), (1, 3));
        assert_eq!(file.target, 2.5);
        assert_eq!(file.idle_timeout_seconds, 30);
        assert_eq!(file.initial_cooldown_seconds, 0);
        assert_eq!(file.panic_threshold, 3.0);
        assert_eq!(file.max_pending, 7);
    }

    #[test]
    fn custom_metric_and_metric_go_together() {
        let (file, _) = patched(json!({ "custom_metric": "vllm:num_requests_waiting" }));
        assert_eq!(file.metric, "custom");
        let mut file = file;
        let problems = merge(&mut file, json!({ "metric": "rps" }).as_object().unwrap());
        assert!(problems.is_empty());
        assert_eq!((file.metric.as_str(), file.custom_metric), ("rps", None));
    }

    #[test]
    fn every_bad_key_is_named() {
        let (_, problems) = patched(json!({
            "min_workers": -1, "target": "high", "cooldown": 5, "stable_window_seconds": 1.5,
            "metric": 3, "custom_metric": 4,
        }));
        assert_eq!(problems.len(), 6, "{problems:?}");
        for key in [
            "min_workers",
            "target",
            "cooldown",
            "stable_window_seconds",
            "metric",
        ] {
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with(&format!("scaling.{key}:"))),
                "{key}: {problems:?}"
            );
        }
    }

    /// The merged settings are checked like the config: min above max is refused.
    #[test]
    fn merged_settings_are_validated() {
        let (file, problems) = patched(json!({ "min_workers": 5, "max_workers": 2 }));
        assert!(problems.is_empty());
        let found = config::scaling_settings("scaling", &file).expect_err("invalid");
        assert!(
            found.iter().any(|p| p.to_string().contains("scaling.")),
            "{found:?}"
        );
    }
}
