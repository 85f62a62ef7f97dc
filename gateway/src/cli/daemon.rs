//! `portico reload` and `portico config`: the daemon-wide admin calls.

use std::fmt::Write as _;

use serde_json::Value;

use super::admin::{AdminClient, CliError};
use super::print_json;

/// `POST /admin/reload`: what changed, and what waits for a restart.
pub async fn reload(client: &AdminClient, json: bool) -> Result<(), CliError> {
    let answer = client.post("/admin/reload", None).await?;
    if json {
        print_json(&answer);
    } else {
        out!("{}", reload_report(&answer));
    }
    Ok(())
}

/// The reload answer for people. `endpoints` is a count or an object of id lists (`added`,
/// `removed`, …); whatever is present is shown.
fn reload_report(answer: &Value) -> String {
    let mut out = String::from("configuration reloaded\n");
    match &answer["endpoints"] {
        Value::Object(changes) => {
            for (change, ids) in changes {
                let ids: Vec<String> = match ids {
                    Value::Array(list) => list.iter().map(super::view::cell).collect(),
                    other => vec![super::view::cell(other)],
                };
                if !ids.is_empty() {
                    let change = change.replace('_', " ");
                    let _ = writeln!(out, "  endpoints {change}: {}", ids.join(", "));
                }
            }
        }
        Value::Null => {}
        count => {
            let _ = writeln!(out, "  endpoints updated: {count}");
        }
    }
    if let Some(count) = answer["certificates"].as_u64().filter(|n| *n > 0) {
        let _ = writeln!(out, "  certificates replaced: {count}");
    }
    let waiting: Vec<&Value> = answer["needs_restart"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    if !waiting.is_empty() {
        out.push_str("these changes take effect only after a restart:\n");
        for change in waiting {
            let _ = writeln!(out, "  {}", super::view::cell(change));
        }
    }
    out
}

/// `GET /admin/config`: the config in force (secrets redacted), as TOML like the file, or the
/// API's JSON with `--json`.
pub async fn config(client: &AdminClient, json: bool) -> Result<(), CliError> {
    let answer = client.get("/admin/config", &[]).await?;
    if json {
        print_json(&answer);
        return Ok(());
    }
    let mut config = answer["config"].clone();
    drop_nulls(&mut config);
    if let Some(path) = answer["path"].as_str() {
        outln!("# in force, from {path} (secrets redacted)");
    } else {
        outln!("# in force (secrets redacted)");
    }
    match toml::to_string(&config) {
        Ok(text) => out!("{text}"),
        // A shape TOML cannot hold: the JSON says the same.
        Err(_) => print_json(&config),
    }
    Ok(())
}

/// Removes null members (unset options): TOML has no null.
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(list) => list.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Both shapes of `endpoints` read well; empty lists are left out.
    #[test]
    fn reload_reports() {
        let counted = reload_report(&json!({"reloaded": true, "endpoints": 2,
            "certificates": 1, "needs_restart": ["listener public: address"]}));
        assert_eq!(
            counted,
            "configuration reloaded\n  endpoints updated: 2\n  certificates replaced: 1\n\
             these changes take effect only after a restart:\n  listener public: address\n"
        );
        let listed = reload_report(&json!({"reloaded": true,
            "endpoints": {"added": ["e2"], "removed": [], "scaling_updated": ["e1", "e3"]}}));
        assert_eq!(
            listed,
            "configuration reloaded\n  endpoints added: e2\n  endpoints scaling updated: e1, e3\n"
        );
    }

    /// Nulls disappear at every depth, so the config converts to TOML.
    #[test]
    fn nulls_dropped_for_toml() {
        let mut config = json!({"server": {"admin_listen": "127.0.0.1:0", "tls": null},
            "endpoint": [{"id": "e1", "async": null, "workers": {"kind": "static"}}]});
        drop_nulls(&mut config);
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("[[endpoint]]"), "{text}");
        assert!(!text.contains("tls"), "{text}");
    }
}
