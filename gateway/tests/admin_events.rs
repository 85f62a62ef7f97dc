//! `GET /admin/endpoints/{id}/events` through the real binary, across a restart: the events
//! of a scaled endpoint are kept in the embedded store under `server.state_dir`, so a
//! Portico started again on the same directory lists them, then its own `created`, with
//! numbering that carries on.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{TestGateway, eventually, fakeworker_bin, http, process_config};

const TOKEN: &str = "events-admin-token";

fn config(state_dir: &Path) -> String {
    let token_hash = gateway::token::sha256_hex(TOKEN);
    let state_dir = serde_json::to_string(&state_dir.display().to_string()).unwrap();
    let fakeworker = fakeworker_bin().display().to_string();
    process_config(
        &[fakeworker.as_str(), "--port", "{port}"],
        &format!(
            "admin_token_sha256 = \"{token_hash}\"\ngrace_period_seconds = 2\nstate_dir = {state_dir}"
        ),
        "",
        "[endpoint.health]\ninterval_ms = 250\ntimeout_ms = 250\n\n\
         [endpoint.scaling]\nmin_workers = 0\nmax_workers = 2",
    )
}

/// `(status, body as JSON)` of an authorized admin request.
fn admin(gw: &TestGateway, method: &str, path: &str, body: &str) -> (u16, Value) {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = http(gw.addr("admin"), &raw);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The listed events as `(seq, type)`.
fn events(gw: &TestGateway, query: &str) -> Vec<(u64, String)> {
    let (status, answer) = admin(gw, "GET", &format!("/admin/endpoints/e1/events{query}"), "");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["endpoint"], "e1");
    answer["events"]
        .as_array()
        .expect("an events array")
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().expect("a seq"),
                e["type"].as_str().expect("a type").to_string(),
            )
        })
        .collect()
}

fn kinds(events: &[(u64, String)]) -> Vec<&str> {
    events.iter().map(|(_, kind)| kind.as_str()).collect()
}

fn assert_increasing(events: &[(u64, String)]) {
    assert!(
        events.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "sequence numbers go up: {events:?}"
    );
}

/// Events of a scaled endpoint survive a graceful restart on the same state directory:
/// the earlier ones are listed first, then the new run's `created`, numbered after them,
/// and the pin, which was saved too, applies again; `since` and `limit` select from the
/// whole history.
#[test]
fn events_survive_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let mut first = TestGateway::start(&config(state.path()));

    let (status, _, refused) = http(
        first.addr("admin"),
        "GET /admin/endpoints/e1/events HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 401, "the events need the admin token: {refused}");

    let (status, answer) = admin(
        &first,
        "POST",
        "/admin/endpoints/e1/scale",
        r#"{"workers":1}"#,
    );
    assert_eq!(status, 200, "{answer}");
    let before = eventually("a ready replica event", Duration::from_secs(30), || {
        let listed = events(&first, "");
        kinds(&listed).contains(&"replica_ready").then_some(listed)
    });
    assert_eq!(before[0], (1, "created".to_string()), "{before:?}");
    assert!(kinds(&before).contains(&"pinned"), "{before:?}");
    assert_increasing(&before);

    assert_eq!(
        first.signal_and_wait("TERM", Duration::from_secs(20)),
        Some(0)
    );

    // The new run is created, then applies the saved pin (and scales up for it).
    let second = TestGateway::start(&config(state.path()));
    let after = eventually(
        "the new run's created event, then the saved pin at work",
        Duration::from_secs(30),
        || {
            let listed = events(&second, "?limit=1000");
            let created = listed.iter().rposition(|(_, kind)| kind == "created")?;
            (listed.iter().filter(|(_, kind)| kind == "created").count() == 2
                && listed[created..].iter().any(|(_, kind)| kind == "pinned")
                && listed[created..]
                    .iter()
                    .any(|(_, kind)| kind == "replica_ready"))
            .then_some(listed)
        },
    );
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "the first run's events come first, unchanged"
    );
    assert_increasing(&after);
    let restarted = after
        .iter()
        .rposition(|(_, kind)| kind == "created")
        .expect("a second created");
    assert!(restarted >= before.len(), "{after:?}");

    // `since` skips what a client already saw, across the restart.
    let last_before = before.last().unwrap().0;
    let newer = events(&second, &format!("?since={last_before}&limit=1000"));
    assert_eq!(&newer[..], &after[before.len()..]);
    assert!(kinds(&newer).contains(&"created"), "{newer:?}");
    // `limit` keeps the newest.
    let newest_two = events(&second, "?limit=2");
    assert_eq!(&newest_two[..], &after[after.len() - 2..]);
    let (status, bad) = admin(&second, "GET", "/admin/endpoints/e1/events?since=x", "");
    assert_eq!(status, 400, "{bad}");
}
