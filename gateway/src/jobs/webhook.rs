//! Webhooks: the status document POSTed to the client's `webhook_url` when its job is done,
//! only to targets `webhook_allow` lists (no server-side request forgery through Portico).
//!
//! A target is allowed when an entry of `webhook_allow` has the same scheme, host and port
//! and the target's path starts with the entry's path at a segment boundary. URLs with user
//! info are refused, and redirects are not followed, so an allowed host cannot bounce the
//! call elsewhere.

use std::sync::OnceLock;
use std::time::Duration;

use http::Uri;
use serde_json::Value;

/// Calls per webhook before giving up.
const TRIES: u32 = 3;

/// Whether `target` may be called under `allow`.
pub fn allowed(target: &str, allow: &[String]) -> bool {
    let Some(target) = parse(target) else {
        return false;
    };
    allow.iter().filter_map(|entry| parse(entry)).any(|entry| {
        entry.scheme == target.scheme
            && entry.host == target.host
            && entry.port == target.port
            && under(&target.path, &entry.path)
    })
}

struct Target {
    scheme: String,
    host: String,
    port: u16,
    path: String,
}

fn parse(url: &str) -> Option<Target> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    Some(Target {
        scheme,
        host: authority.host().to_ascii_lowercase(),
        port: authority.port_u16().unwrap_or(default_port),
        path: uri.path().to_string(),
    })
}

/// `path` is `prefix` or below it: `/hooks/` allows `/hooks/a`; `/hooks` allows `/hooks`
/// and `/hooks/a` but not `/hooksmith`. Dot segments are refused outright.
fn under(path: &str, prefix: &str) -> bool {
    if path
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        return false;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// POSTs `status` to `url`, retrying a few times; failures are logged, never fatal.
pub async fn call(url: String, status: Value) {
    let Some(client) = client() else {
        return;
    };
    let body = status.to_string();
    for attempt in 1..=TRIES {
        let sent = client
            .post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => {
                tracing::warn!(%url, status = response.status().as_u16(), attempt, "webhook refused");
            }
            Err(err) => tracing::warn!(%url, error = %err, attempt, "webhook call failed"),
        }
        tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
    }
}

fn client() -> Option<&'static reqwest::Client> {
    static CLIENT: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .inspect_err(|err| tracing::error!(error = %err, "webhook client failed"))
                .ok()
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Scheme, host, port and a path prefix at a segment boundary must all match.
    #[test]
    fn only_listed_targets() {
        let list = allow(&["https://hooks.example.com/", "http://127.0.0.1:8080/cb"]);
        for ok in [
            "https://hooks.example.com/a/b",
            "https://HOOKS.example.com:443/x",
            "http://127.0.0.1:8080/cb",
            "http://127.0.0.1:8080/cb/1?q=2",
        ] {
            assert!(allowed(ok, &list), "{ok}");
        }
        for refused in [
            "http://hooks.example.com/a",
            "https://hooks.example.com.evil.net/",
            "https://evil.net/https://hooks.example.com/",
            "https://user@hooks.example.com/",
            "https://hooks.example.com:8443/",
            "http://127.0.0.1:8080/cbx",
            "http://127.0.0.1:8080/cb/../admin",
            "http://127.0.0.1:9090/cb",
            "ftp://hooks.example.com/",
            "not a url",
            "",
        ] {
            assert!(!allowed(refused, &list), "{refused}");
        }
        assert!(!allowed("https://hooks.example.com/", &[]));
    }
}
