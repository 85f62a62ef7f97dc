//! The `portico` command line through the real binary: validate, token, version, run.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::{TestGateway, get, portico};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A small valid config with port-0 listeners, for `run` tests.
const MINIMAL_RUN: &str = r#"
[server]
admin_listen = "127.0.0.1:0"
grace_period_seconds = 5

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[listener]]
name = "private"
address = "127.0.0.1:0"

[[project]]
id = "p1"

[[endpoint]]
id = "e1"
project = "p1"
[endpoint.workers]
kind = "static"
urls = ["http://127.0.0.1:9"]
"#;

/// `--version` prints the package version.
#[test]
fn version_is_printed() {
    let out = portico(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("portico {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The default `config.toml` at the repository root is valid, with a one-line summary.
#[test]
fn default_config_is_valid() {
    let path = repo_root().join("config.toml");
    let out = portico(&["validate", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains(": ok ("), "{stdout}");
}

/// Every `valid-*.toml` fixture validates.
#[test]
fn valid_fixtures_are_accepted() {
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("valid-") && name.ends_with(".toml") {
            let out = portico(&["validate", "--config", path.to_str().unwrap()]);
            assert!(out.status.success(), "{name}: {}", text(&out.stderr));
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected valid fixtures, found {seen}");
}

/// A config with many mistakes exits 1 and lists every one of them with its key path.
#[test]
fn invalid_fixture_lists_every_problem() {
    let path = fixtures().join("invalid-many.toml");
    let out = portico(&["validate", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.ends_with(" problems") && !l.ends_with(" problem"))
        .collect();
    assert!(problems.len() >= 5, "{stderr}");
    for line in &problems {
        // "<file>: <key path>: <message>": the key path is never missing.
        let rest = line.split_once(".toml: ").map(|(_, r)| r).unwrap_or("");
        let (key, message) = rest.split_once(": ").unwrap_or(("", ""));
        assert!(
            !key.is_empty() && !message.is_empty(),
            "no key path in {line:?}"
        );
        assert!(!key.contains(' '), "odd key path in {line:?}");
    }
    assert!(
        stderr.contains(&format!("{} problems", problems.len())),
        "{stderr}"
    );
}

/// A CIDR block with host bits set is accepted as its network, with a warning that names
/// the key and the block it became; a block without host bits gets none.
#[test]
fn host_bits_are_accepted_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let config = format!(
        "{}\n[[security_group]]\nid = \"sg\"\ninbound = [{{ protocol = \"tcp\", source = \"2001:db8::1/32\" }}]\n",
        MINIMAL_RUN.replacen(
            "[server]\n",
            "[server]\ntrusted_proxies = [\"10.1.2.3/8\", \"192.0.2.0/24\"]\n",
            1
        )
    );
    std::fs::write(&path, config).unwrap();
    let out = portico(&["validate", "--config", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].contains("server.trusted_proxies[0]") && warnings[0].contains("10.0.0.0/8"),
        "{stderr}"
    );
    assert!(
        warnings[1].contains("security_group[sg].inbound[0].source")
            && warnings[1].contains("2001:db8::/32"),
        "{stderr}"
    );
}

/// A missing config file is a clear error, not a panic.
#[test]
fn missing_config_is_reported() {
    let out = portico(&["validate", "--config", "/nonexistent/portico.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("/nonexistent/portico.toml"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `token new` prints a token and a config line whose hash is the token's SHA-256, and that
/// line is accepted by the config validator.
#[test]
fn token_new_prints_a_usable_config_line() {
    let out = portico(&["token", "new", "--project", "p1", "--name", "ci"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token line");
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("{ name = \"ci\""))
        .expect("config line")
        .trim();
    assert!(
        line.contains(&gateway::token::sha256_hex(token)),
        "{stdout}"
    );

    let config = MINIMAL_RUN.replace("id = \"p1\"", &format!("id = \"p1\"\ntokens = [{line}]"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let out = portico(&["validate", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `run` prints one `listening on` line per listener (admin last), answers health checks
/// and unknown paths with JSON, and exits 0 on SIGTERM.
#[test]
fn run_listens_and_stops_on_sigterm() {
    let mut gateway = TestGateway::start(MINIMAL_RUN);
    let stdout = gateway.stdout();
    let names: Vec<&str> = stdout
        .iter()
        .filter_map(|l| l.strip_prefix("listening on "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["public", "private", "admin"]);

    for listener in ["public", "private", "admin"] {
        let (status, _, body) = get(gateway.addr(listener), "/healthz");
        assert_eq!(status, 200, "{listener}");
        assert_eq!(body, r#"{"status":"ok"}"#);
    }
    let (status, _, _) = get(gateway.addr("public"), "/readyz");
    assert_eq!(status, 200);

    let (status, headers, body) = get(gateway.addr("public"), "/nope");
    assert_eq!(status, 404);
    assert!(headers.contains(&("content-type".into(), "application/json".into())));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "endpoint_not_found");

    assert_eq!(
        gateway.signal_and_wait("TERM", Duration::from_secs(10)),
        Some(0)
    );
}

/// `run` on an invalid config exits 1 and names the problems.
#[test]
fn run_refuses_an_invalid_config() {
    let path = fixtures().join("invalid-many.toml");
    let out = portico(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("configuration is not valid"), "{stderr}");
    assert!(stderr.lines().count() >= 6, "{stderr}");
}

/// `--log-format json` writes JSON log lines to stderr.
#[test]
fn json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, MINIMAL_RUN).unwrap();
    let mut child = std::process::Command::new(support::portico_bin())
        .args([
            "run",
            "--log-format",
            "json",
            "--config",
            path.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let first = lines.next().expect("a log line").unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let json: serde_json::Value = serde_json::from_str(&first).expect("JSON log line");
    assert_eq!(json["level"], "INFO");
}
