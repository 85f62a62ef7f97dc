//! Operators' settings outlive a restart of a lone Portico (the embedded store): a stop and
//! changed scaling settings are applied again by the next run on the same state directory;
//! scaling settings made over a file that has since changed give way to the file.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{TestGateway, admin, endpoint_config, eventually, fakeworker_bin, get};

fn config(state: &Path, max_workers: u32) -> String {
    let command = serde_json::to_string(&[
        fakeworker_bin().display().to_string(),
        "--port".into(),
        "{port}".into(),
    ])
    .unwrap();
    endpoint_config(
        "e1",
        &format!("state_dir = {:?}", state.display().to_string()),
        "",
        &format!("kind = \"process\"\ncommand = {command}"),
        &format!("[endpoint.scaling]\nmin_workers = 0\nmax_workers = {max_workers}"),
    )
}

fn send(gw: &TestGateway, method: &str, path: &str, body: &str) -> Value {
    let (status, answer) = admin(gw, method, path, body);
    assert_eq!(status, 200, "{method} {path}: {answer}");
    answer
}

fn endpoint(gw: &TestGateway) -> Value {
    send(gw, "GET", "/admin/endpoints/e1", "")
}

/// A stop and a scaling change survive a restart; a changed file wins over the saved
/// scaling change but not over the stop.
#[test]
fn a_stop_and_scaling_changes_survive_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let mut first = TestGateway::start(&config(state.path(), 2));
    send(
        &first,
        "PATCH",
        "/admin/endpoints/e1/scaling",
        r#"{"max_workers": 3}"#,
    );
    send(&first, "POST", "/admin/endpoints/e1/stop", "");
    assert_eq!(
        first.signal_and_wait("TERM", Duration::from_secs(20)),
        Some(0)
    );

    let mut second = TestGateway::start(&config(state.path(), 2));
    eventually(
        "the saved stop and scaling",
        Duration::from_secs(10),
        || {
            let e = endpoint(&second);
            (e["mode"] == "stopped" && e["scaling"]["max_workers"] == 3).then_some(())
        },
    );
    let (status, _, _) = get(second.addr("public"), "/project/p1/endpoint/e1/health");
    assert_eq!(
        status, 503,
        "a stopped endpoint refuses traffic after the restart"
    );
    assert_eq!(
        second.signal_and_wait("TERM", Duration::from_secs(20)),
        Some(0)
    );

    // The file's scaling changed meanwhile: it wins; the stop still holds.
    let third = TestGateway::start(&config(state.path(), 4));
    eventually("the saved stop", Duration::from_secs(10), || {
        (endpoint(&third)["mode"] == "stopped").then_some(())
    });
    assert_eq!(endpoint(&third)["scaling"]["max_workers"], 4);
    send(&third, "POST", "/admin/endpoints/e1/start", "");
    assert_eq!(endpoint(&third)["mode"], "auto");
}
