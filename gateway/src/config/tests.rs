//! Tests of loading, defaults and every validation rule of the configuration.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipfilter::{PortRange, Source};
use scaler::{Metric, ScalingSettings};

use super::*;

/// SHA-256 of "admin-secret", "ci-token", "web-token" and "other".
const ADMIN: &str = "16175223c8ddce5ace0493c948569c211b03c4c6bb3d3e484434999448cffe01";
const CI: &str = "948b8c2427cd29047839b8e4a27a08763f8befbafa86be5cce8e46217d75e58a";
const WEB: &str = "671391faf68e509ca4ec48ccb0690453e9b82c2fa48273703233d60b52b9640d";
const OTHER: &str = "d9298a10d1b0735837dc4bd85dac641b0f3cef27a47e5d53a54f2f3f5b2fcffa";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, &fixtures())
}

fn problems(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => Vec::new(),
        Err(err) => err.problems(),
    }
}

/// The key paths of the problems in `text`.
fn paths(text: &str) -> BTreeSet<String> {
    match load(text) {
        Ok(_) => BTreeSet::new(),
        Err(ConfigError::Invalid(problems)) => problems.into_iter().map(|p| p.path).collect(),
        Err(err) => panic!("unexpected error: {err}"),
    }
}

/// Asserts that each case yields problems at exactly the expected key paths.
fn assert_cases(cases: &[(String, &[&str])]) {
    for (text, expected) in cases {
        let expected: BTreeSet<String> = expected.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            paths(text),
            expected,
            "\n--- config:\n{text}\n--- problems:\n{:#?}",
            problems(text)
        );
    }
}

const STATIC: &str = "kind = \"static\"\nurls = [\"http://127.0.0.1:8001\"]";

/// A valid config with project `p1` (token `t1`) and endpoint `e1`, plus `head` before
/// everything, `keys` in the endpoint, `workers` as its workers table and `tables` after.
fn config(head: &str, keys: &str, workers: &str, tables: &str) -> String {
    format!(
        "{head}\n\n[[project]]\nid = \"p1\"\ntokens = [{{ name = \"t1\", sha256 = \"{CI}\" }}]\n\n\
         [[endpoint]]\nid = \"e1\"\nproject = \"p1\"\n{keys}\n\n[endpoint.workers]\n{workers}\n\n{tables}\n"
    )
}

fn head(text: &str) -> String {
    config(text, "", STATIC, "")
}

fn keys(text: &str) -> String {
    config("", text, STATIC, "")
}

fn workers(text: &str) -> String {
    config("", "", text, "")
}

fn tables(text: &str) -> String {
    config("", "", STATIC, text)
}

const DESIGN_EXAMPLE: &str = r#"
[server]
admin_listen = "127.0.0.1:9090"      # admin API, /metrics, dashboard
admin_token_sha256 = "ADMIN"         # hex SHA-256 of the admin bearer token
trusted_proxies = ["10.0.0.0/8"]     # only these peers may set the client address
state_dir = "./data"                 # embedded state: async queue, events, usage
grace_period_seconds = 30            # drain on SIGTERM

[[listener]]                         # one or more; endpoints may restrict to some
name = "public"
address = "0.0.0.0:8080"
tls = { cert = "tls/cert.pem", key = "tls/key.pem" }   # optional
proxy_protocol = false

[object_store]                       # where async results go ("EOS")
url = "file://./data/results"        # or "s3://bucket/prefix"
endpoint = "http://127.0.0.1:9000"   # S3-compatible endpoint; credentials from env
region = "us-east-1"

[[project]]
id = "p-5520"
tokens = [{ name = "ci", sha256 = "CI" }]

[[security_group]]
id = "sg-app"
inbound = [{ protocol = "tcp", port = 8080, source = "10.8.220.6/32" },
           { protocol = "tcp", port_range = [8000, 8100], source = "any" }]

[[endpoint]]
id = "is-8458"
project = "p-5520"
listeners = ["public"]               # default: all
security_groups = ["sg-app"]         # none attached: open; any attached: deny all else
public = false                       # true: no token needed (security groups still apply)
max_body_bytes = 10485760
timeouts = { connect_ms = 2000, first_byte_seconds = 300, idle_seconds = 600 }

[endpoint.workers]                   # how workers are found and started
kind = "process"                     # "process" | "static" (later: "kubernetes", "command")
command = ["fakeworker", "--port", "{port}"]
env = { MODEL_PATH = "/opt/model" }
health_path = "/health"
metrics_path = "/metrics"
startup_timeout_seconds = 600
# kind = "static": urls = ["http://10.0.0.5:8000", …]

[endpoint.scaling]                   # TIR "serverless configuration"
min_workers = 0                      # "active workers"; min == max disables autoscaling
max_workers = 4                      # "max workers"
metric = "concurrency"               # "concurrency" | "rps" | "custom"
# custom_metric = "vllm:num_requests_running"   # with metric = "custom"
target = 10                          # per worker
idle_timeout_seconds = 60            # idle workers stay this long
initial_cooldown_seconds = 300       # after a wake, no scale to zero before this
stable_window_seconds = 60
panic_window_seconds = 6
panic_threshold = 2.0
max_pending = 1000                   # requests held while no worker is ready
cold_start_timeout_seconds = 600

[endpoint.balance]
strategy = "least_inflight"          # later: "round_robin", "metric", "session", "prefix"

[endpoint.async]
routes = ["/v1/chat/completions"]    # POST/OPTIONS only on these; they always answer 202
concurrency_per_worker = 4
max_attempts = 3
ttl_seconds = 21600
webhook_allow = ["https://hooks.example.com/"]   # webhook targets allowed (none by default)
queue = "embedded"                   # or "redis://127.0.0.1:6379"
"#;

fn hash(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// The DESIGN.md §3 example (with real hashes) loads, and every typed value is right.
#[test]
fn design_example_loads_with_typed_values() {
    let text = DESIGN_EXAMPLE
        .replace("\"ADMIN\"", &format!("\"{ADMIN}\""))
        .replace("\"CI\"", &format!("\"{CI}\""));
    let config = load(&text).unwrap_or_else(|err| panic!("{err}"));
    let base = std::path::absolute(fixtures()).unwrap();
    let base: PathBuf = base
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();

    let server = &config.server;
    assert_eq!(
        server.admin_listen,
        "127.0.0.1:9090".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(server.admin_token_sha256, Some(hash(ADMIN)));
    assert_eq!(server.trusted_proxies, vec!["10.0.0.0/8".parse().unwrap()]);
    assert_eq!(server.state_dir, base.join("data"));
    assert_eq!(server.grace_period, Duration::from_secs(30));

    assert_eq!(config.listeners.len(), 1);
    let listener = &config.listeners[0];
    assert_eq!(listener.name, "public");
    assert_eq!(
        listener.address,
        "0.0.0.0:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        listener.tls,
        Some(Tls {
            cert: base.join("tls/cert.pem"),
            key: base.join("tls/key.pem"),
        })
    );
    assert!(!listener.proxy_protocol);

    assert_eq!(
        config.object_store,
        ObjectStore {
            url: format!("file://{}", base.join("data/results").display()),
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: "us-east-1".into(),
        }
    );
    assert_eq!(
        config.projects,
        vec![Project {
            id: "p-5520".into(),
            tokens: vec![Token {
                name: "ci".into(),
                sha256: hash(CI),
            }],
        }]
    );
    assert_eq!(
        config.security_groups,
        vec![SecurityGroup {
            id: "sg-app".into(),
            inbound: vec![
                InboundRule {
                    ports: PortRange::new(8080, 8080).unwrap(),
                    source: "10.8.220.6/32".parse().unwrap(),
                },
                InboundRule {
                    ports: PortRange::new(8000, 8100).unwrap(),
                    source: Source::Any,
                },
            ],
        }]
    );

    let endpoint = config.endpoint("is-8458").unwrap();
    assert_eq!(endpoint.project, "p-5520");
    assert_eq!(endpoint.listeners, ["public"]);
    assert_eq!(endpoint.security_groups, ["sg-app"]);
    assert!(!endpoint.public);
    assert_eq!(endpoint.max_body_bytes, 10_485_760);
    assert_eq!(
        endpoint.timeouts,
        Timeouts {
            connect: Duration::from_millis(2000),
            first_byte: Duration::from_secs(300),
            idle: Duration::from_secs(600),
        }
    );
    assert_eq!(
        endpoint.workers,
        Workers {
            kind: WorkerKind::Process {
                command: vec!["fakeworker".into(), "--port".into(), "{port}".into()],
                env: vec![("MODEL_PATH".into(), "/opt/model".into())],
            },
            health_path: "/health".into(),
            metrics_path: "/metrics".into(),
            startup_timeout: Duration::from_secs(600),
            protocol: WorkerProtocol::Http1,
        }
    );
    assert_eq!(endpoint.scaling, ScalingSettings::default());
    assert_eq!(endpoint.balance.strategy, BalanceStrategy::LeastInflight);
    assert_eq!(
        endpoint.async_,
        Some(AsyncSettings {
            routes: vec!["/v1/chat/completions".into()],
            concurrency_per_worker: 4,
            max_attempts: 3,
            ttl: Duration::from_secs(21600),
            webhook_allow: vec!["https://hooks.example.com/".into()],
            queue: QueueBackend::Embedded,
            reclaim_after: Duration::from_secs(30),
        })
    );
    assert_eq!(config.project("p-5520").unwrap().tokens.len(), 1);
    assert!(config.endpoint("nope").is_none());
    assert_eq!(
        config.summary(),
        "1 listener, 1 project, 1 security group, 1 endpoint"
    );
}

/// A minimal config (one project, one endpoint with static URLs) gets every default.
#[test]
fn minimal_config_gets_every_default() {
    let config = Config::load(&fixtures().join("valid-minimal.toml")).unwrap();
    let base = std::path::absolute(fixtures()).unwrap();

    let server = &config.server;
    assert_eq!(
        server.admin_listen,
        "127.0.0.1:9090".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(server.admin_token_sha256, None);
    assert!(server.trusted_proxies.is_empty());
    assert_eq!(server.state_dir, base.join("data"));
    assert_eq!(server.grace_period, Duration::from_secs(30));
    assert_eq!(server.access_log, None);
    assert!(!server.metrics_public);
    assert_eq!(server.worker_threads, 0);
    assert_eq!(server.max_header_bytes, 65536);
    assert_eq!(server.max_headers, 100);
    assert_eq!(server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(server.keepalive_timeout, Duration::from_secs(75));
    assert_eq!(server.config_watch, Some(Duration::from_secs(2)));

    assert_eq!(
        config.listeners,
        vec![Listener {
            name: "public".into(),
            address: "0.0.0.0:8080".parse().unwrap(),
            tls: None,
            proxy_protocol: false,
        }]
    );
    assert_eq!(
        config.object_store,
        ObjectStore {
            url: format!("file://{}", base.join("data/results").display()),
            endpoint: None,
            region: "us-east-1".into(),
        }
    );
    assert!(config.security_groups.is_empty());
    assert_eq!(config.projects[0].tokens, vec![]);

    let endpoint = config.endpoint("echo").unwrap();
    assert_eq!(endpoint.listeners, ["public"]);
    assert!(endpoint.security_groups.is_empty());
    assert!(!endpoint.public);
    assert_eq!(endpoint.max_body_bytes, 10 * 1024 * 1024);
    assert_eq!(
        endpoint.timeouts,
        Timeouts {
            connect: Duration::from_millis(2000),
            first_byte: Duration::from_secs(300),
            idle: Duration::from_secs(600),
        }
    );
    assert_eq!(
        endpoint.workers,
        Workers {
            kind: WorkerKind::Static {
                urls: vec!["http://127.0.0.1:8001".parse().unwrap()],
            },
            health_path: "/health".into(),
            metrics_path: "/metrics".into(),
            startup_timeout: Duration::from_secs(600),
            protocol: WorkerProtocol::Http1,
        }
    );
    assert_eq!(endpoint.scaling, ScalingSettings::default());
    assert_eq!(endpoint.balance.strategy, BalanceStrategy::LeastInflight);
    assert_eq!(endpoint.async_, None);
    assert_eq!(
        config.summary(),
        "1 listener, 1 project, 0 security groups, 1 endpoint"
    );
}

/// Every `valid-*.toml` fixture loads, and `invalid-many.toml` reports at least five problems.
#[test]
fn fixtures_load_or_fail_as_named() {
    let mut valid = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("valid-") && name.ends_with(".toml") {
            if let Err(err) = Config::load(&path) {
                panic!("{name}: {err}");
            }
            valid += 1;
        }
    }
    assert!(
        valid >= 2,
        "expected valid-full.toml and valid-minimal.toml"
    );

    let err = Config::load(&fixtures().join("invalid-many.toml")).unwrap_err();
    let problems = err.problems();
    assert!(problems.len() >= 5, "{problems:#?}");
    for expected in [
        "server.admin_listen: ",
        "server.trusted_proxies[1]: ",
        "server.max_headers: invalid type",
        "listener[public].name: duplicate",
        "listener[public].address: ",
        "object_store.url: ",
        "project[#1].id: ",
        "project[#1].tokens[ci].sha256: ",
        "security_group[sg-app].inbound[0].protocol: ",
        "security_group[sg-app].inbound[0].port: ",
        "security_group[sg-app].inbound[0].source: ",
        "endpoint[is-8458].project: unknown project",
        "endpoint[is-8458].security_groups[1]: ",
        "endpoint[is-8458].workers.kind: unknown kind \"docker\"",
        "endpoint[is-8458].scaling.max_workers: must be >= min_workers (3)",
        "endpoint[is-8458].scaling.max_wrokers: unknown field",
        "endpoint[is-8458].async.routes[0]: ",
        "endpoint[is-8458].async.queue: ",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "missing {expected:?} in {problems:#?}"
        );
    }
}

/// The full fixture's typed values come through: TLS files, S3 store, both worker kinds.
#[test]
fn full_fixture_has_its_values() {
    let config = Config::load(&fixtures().join("valid-full.toml")).unwrap();
    assert_eq!(
        config.summary(),
        "2 listeners, 1 project, 1 security group, 2 endpoints"
    );
    assert!(config.listeners[0].tls.as_ref().unwrap().cert.is_file());
    assert!(config.listeners[1].proxy_protocol);
    assert_eq!(config.object_store.url, "s3://portico-results/async");
    assert!(config.server.access_log.as_ref().unwrap().is_absolute());
    let main = config.endpoint("is-8458").unwrap();
    assert_eq!(
        main.scaling.metric,
        Metric::Custom("vllm:num_requests_running".into())
    );
    assert!(matches!(&main.workers.kind, WorkerKind::Static { urls } if urls.len() == 2));
    let embed = config.endpoint("embed-1").unwrap();
    assert_eq!(embed.listeners, ["public", "internal"]);
    assert!(embed.public);
    assert_eq!(embed.workers.protocol, WorkerProtocol::H2c);
    assert_eq!(embed.balance.strategy, BalanceStrategy::RoundRobin);
}

/// A config with many distinct mistakes yields every one of them, each with its key path.
#[test]
fn reports_every_problem_in_one_pass() {
    let text = format!(
        r#"
[server]
admin_listen = "nowhere"
grace_period_seconds = "soon"

[[listener]]
name = "public"
address = "0.0.0.0:99999"

[[project]]
id = "p1"
tokens = [{{ name = "ci", sha256 = "{CI}" }}, {{ name = "ci", sha256 = "{CI}" }}]

[[endpoint]]
id = "e1"
project = "p2"
max_body_bytes = 0

[endpoint.workers]
kind = "static"

[endpoint.scaling]
metric = "custom"
"#
    );
    let problems = problems(&text);
    let expected = [
        "server.admin_listen: ",
        "server.grace_period_seconds: invalid type",
        "listener[public].address: ",
        "project[p1].tokens[ci].name: duplicate",
        "project[p1].tokens[ci].sha256: same hash as project[p1].tokens[ci].sha256",
        "endpoint[e1].project: unknown project `p2` (defined: p1)",
        "endpoint[e1].max_body_bytes: must be >= 1",
        "endpoint[e1].workers.urls: is required",
        "endpoint[e1].scaling.custom_metric: is required",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for prefix in expected {
        assert!(
            problems.iter().any(|p| p.starts_with(prefix)),
            "missing {prefix:?} in {problems:#?}"
        );
    }
}

/// Unknown keys are reported with their full path: top level, server, endpoint sub-table,
/// array element, token and inbound rule; several in one section are all reported.
#[test]
fn unknown_keys_are_named_by_path() {
    assert_cases(&[
        (head("frobnicate = 1"), &["frobnicate"]),
        (
            head("[server]\nadmin_listn = \"127.0.0.1:1\""),
            &["server.admin_listn"],
        ),
        (
            head("[server]\nadmin_listn = 1\nstate_dri = \"x\""),
            &["server.admin_listn", "server.state_dri"],
        ),
        (
            tables("[endpoint.scaling]\nmax_wrokers = 5"),
            &["endpoint[e1].scaling.max_wrokers"],
        ),
        (
            keys("timeouts = { conect_ms = 5 }"),
            &["endpoint[e1].timeouts.conect_ms"],
        ),
        (keys("colour = \"red\""), &["endpoint[e1].colour"]),
        (
            workers(&format!("{STATIC}\nhealth = \"/h\"")),
            &["endpoint[e1].workers.health"],
        ),
        (
            tables("[endpoint.async]\nroute = [\"/x\"]"),
            &["endpoint[e1].async.route"],
        ),
        (
            tables("[endpoint.balance]\nstrategie = \"x\""),
            &["endpoint[e1].balance.strategie"],
        ),
        (
            head("[[listener]]\nname = \"a\"\nadress = \"0.0.0.0:1\""),
            &["listener[a].adress"],
        ),
        (
            head(&format!(
                "[[project]]\nid = \"p2\"\ntokens = [{{ name = \"x\", sha = \"{OTHER}\" }}]"
            )),
            // The misspelt key hides the hash, which is then missing.
            &["project[p2].tokens[x].sha", "project[p2].tokens[x].sha256"],
        ),
        (
            head("[[security_group]]\nid = \"sg\"\ninbound = [{ ports = 1, source = \"any\" }]"),
            &["security_group[sg].inbound[0].ports"],
        ),
        (
            head("[object_store]\nbucket = \"x\""),
            &["object_store.bucket"],
        ),
    ]);
}

/// Wrong types are reported with their path, and a wrong type hides nothing else.
#[test]
fn wrong_types_are_named_by_path() {
    assert_cases(&[
        (
            head("[server]\ngrace_period_seconds = \"30\""),
            &["server.grace_period_seconds"],
        ),
        (
            head("[server]\nmax_headers = \"x\"\nadmin_listen = \"bad\""),
            &["server.max_headers", "server.admin_listen"],
        ),
        (
            keys("max_body_bytes = \"10MB\""),
            &["endpoint[e1].max_body_bytes"],
        ),
        (
            tables("[endpoint.scaling]\ntarget = \"ten\""),
            &["endpoint[e1].scaling.target"],
        ),
        (
            tables("[endpoint.scaling]\nmin_workers = -1"),
            &["endpoint[e1].scaling.min_workers"],
        ),
        (keys("public = \"yes\""), &["endpoint[e1].public"]),
        (keys("listeners = \"public\""), &["endpoint[e1].listeners"]),
        (
            keys("security_groups = [1]"),
            &["endpoint[e1].security_groups[0]"],
        ),
        (
            workers("kind = \"process\"\ncommand = [\"w\"]\nenv = { A = 1 }"),
            &["endpoint[e1].workers.env.A"],
        ),
        (
            head("[server]\ntrusted_proxies = \"10.0.0.0/8\""),
            &["server.trusted_proxies"],
        ),
        (keys("scaling = 3"), &["endpoint[e1].scaling"]),
        (head("[listener]\nname = \"a\""), &["listener"]),
        (head("server = 3"), &["server"]),
        (head("listener = [1]"), &["listener[#1]"]),
        (
            head("[[listener]]\nname = \"a\"\ntls = { cert = \"tls/cert.pem\" }"),
            &["listener[a].tls.key"],
        ),
        (
            keys("").replace("id = \"e1\"", "id = 7"),
            &["endpoint[#1].id"],
        ),
    ]);
}

/// A TOML syntax error is one problem located by line and column.
#[test]
fn syntax_error_is_located() {
    let problems =
        problems("[server]\nadmin_listen = \"127.0.0.1:9090\"\ngrace_period_seconds = \n");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].starts_with("line 3, column "), "{problems:#?}");
    assert!(problems[0].contains("TOML syntax error"), "{problems:#?}");
}

/// `[server]` values are checked: addresses, token hash, CIDRs, limits, paths.
#[test]
fn rejects_bad_server_values() {
    assert_cases(&[
        (
            head("[server]\nadmin_listen = \"localhost:9090\""),
            &["server.admin_listen"],
        ),
        (
            head("[server]\nadmin_token_sha256 = \"abc\""),
            &["server.admin_token_sha256"],
        ),
        (
            head(&format!(
                "[server]\nadmin_token_sha256 = \"{}x\"",
                &ADMIN[1..]
            )),
            &["server.admin_token_sha256"],
        ),
        (
            head("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]"),
            &["server.trusted_proxies[1]"],
        ),
        (
            head("[server]\ntrusted_proxies = [\"any\"]"),
            &["server.trusted_proxies[0]"],
        ),
        (
            head("[server]\ntrusted_proxies = [\"example.com\"]"),
            &["server.trusted_proxies[0]"],
        ),
        (head("[server]\nstate_dir = \"\""), &["server.state_dir"]),
        (head("[server]\naccess_log = \"\""), &["server.access_log"]),
        (
            head("[server]\nworker_threads = 1025"),
            &["server.worker_threads"],
        ),
        (
            head("[server]\nmax_header_bytes = 1000"),
            &["server.max_header_bytes"],
        ),
        (head("[server]\nmax_headers = 7"), &["server.max_headers"]),
        (
            head("[server]\nheader_read_timeout_seconds = 0"),
            &["server.header_read_timeout_seconds"],
        ),
        (
            head("[server]\nkeepalive_timeout_seconds = 0"),
            &["server.keepalive_timeout_seconds"],
        ),
        (
            head("[server]\nconfig_watch_seconds = 3601"),
            &["server.config_watch_seconds"],
        ),
        (head("[server]\nconfig_watch_seconds = 0"), &[]),
        (
            head("[server]\ngrace_period_seconds = 0\nworker_threads = 1024"),
            &[],
        ),
    ]);
}

/// Listeners: names, addresses, conflicts (with each other and the admin listener), TLS files.
#[test]
fn rejects_bad_listeners() {
    let two = |a: &str, b: &str| {
        head(&format!(
            "[[listener]]\nname = \"a\"\naddress = \"{a}\"\n\n[[listener]]\nname = \"b\"\naddress = \"{b}\""
        ))
    };
    assert_cases(&[
        (
            head("[[listener]]\naddress = \"0.0.0.0:1\""),
            &["listener[#1].name"],
        ),
        (
            head("[[listener]]\nname = \"bad name\""),
            &["listener[#1].name"],
        ),
        (
            head(
                "[[listener]]\nname = \"a\"\naddress = \"0.0.0.0:1\"\n[[listener]]\nname = \"a\"\naddress = \"0.0.0.0:2\"",
            ),
            &["listener[a].name"],
        ),
        (
            head("[[listener]]\nname = \"a\"\naddress = \"nope\""),
            &["listener[a].address"],
        ),
        (
            head("[[listener]]\nname = \"a\"\naddress = \"0.0.0.0:70000\""),
            &["listener[a].address"],
        ),
        (
            two("127.0.0.1:8080", "127.0.0.1:8080"),
            &["listener[b].address"],
        ),
        (
            two("0.0.0.0:8080", "127.0.0.1:8080"),
            &["listener[b].address"],
        ),
        (two("127.0.0.1:8080", "[::]:8080"), &["listener[b].address"]),
        (two("127.0.0.1:0", "127.0.0.1:0"), &[]),
        (two("127.0.0.1:8080", "127.0.0.2:8080"), &[]),
        (two("0.0.0.0:8080", "[::1]:8080"), &[]),
        (
            head("[[listener]]\nname = \"a\"\naddress = \"0.0.0.0:9090\""),
            &["listener[a].address"],
        ),
        (
            head(
                "[[listener]]\nname = \"a\"\ntls = { cert = \"tls/missing.pem\", key = \"tls/key.pem\" }",
            ),
            &["listener[a].tls.cert"],
        ),
        (
            head("[[listener]]\nname = \"a\"\ntls = { cert = \"tls/cert.pem\", key = \"tls\" }"),
            &["listener[a].tls.key"],
        ),
        // Both files exist but do not make a usable pair.
        (
            head(
                "[[listener]]\nname = \"a\"\ntls = { cert = \"tls/cert.pem\", key = \"tls/other-key.pem\" }",
            ),
            &["listener[a].tls"],
        ),
        (
            head(
                "[[listener]]\nname = \"a\"\ntls = { cert = \"tls/garbage.pem\", key = \"tls/key.pem\" }",
            ),
            &["listener[a].tls"],
        ),
        (
            head(
                "[[listener]]\nname = \"a\"\ntls = { cert = \"tls/cert.pem\", key = \"tls/garbage.pem\" }",
            ),
            &["listener[a].tls"],
        ),
        (head("listener = []"), &["listener"]),
    ]);
}

/// `[object_store]`: URL forms, bucket names, endpoint URL, region.
#[test]
fn rejects_bad_object_store() {
    assert_cases(&[
        (
            head("[object_store]\nurl = \"ftp://x/y\""),
            &["object_store.url"],
        ),
        (
            head("[object_store]\nurl = \"./results\""),
            &["object_store.url"],
        ),
        (
            head("[object_store]\nurl = \"file://\""),
            &["object_store.url"],
        ),
        (
            head("[object_store]\nurl = \"s3://Bad_Bucket/x\""),
            &["object_store.url"],
        ),
        (
            head("[object_store]\nurl = \"s3://ab\""),
            &["object_store.url"],
        ),
        (
            head("[object_store]\nurl = \"s3://\""),
            &["object_store.url"],
        ),
        (
            head("[object_store]\nurl = \"s3://-bucket\""),
            &["object_store.url"],
        ),
        (
            head("[object_store]\nurl = \"s3://my.bucket-1/some/prefix\""),
            &[],
        ),
        (
            head("[object_store]\nurl = \"file:///var/lib/portico\""),
            &[],
        ),
        (
            head("[object_store]\nendpoint = \"127.0.0.1:9000\""),
            &["object_store.endpoint"],
        ),
        (
            head("[object_store]\nendpoint = \"ftp://minio:9000\""),
            &["object_store.endpoint"],
        ),
        (
            head("[object_store]\nregion = \"\""),
            &["object_store.region"],
        ),
    ]);
}

/// Projects and tokens: ids, duplicates, hash format, a hash used twice anywhere.
#[test]
fn rejects_bad_projects_and_tokens() {
    let project = |body: &str| head(&format!("[[project]]\n{body}"));
    assert_cases(&[
        (project("tokens = []"), &["project[#1].id"]),
        (project("id = \"a/b\""), &["project[#1].id"]),
        (project("id = \"..\""), &["project[#1].id"]),
        (project("id = \"\""), &["project[#1].id"]),
        (project("id = \"p1\""), &["project[p1].id"]),
        (
            project(&format!(
                "id = \"p2\"\ntokens = [{{ sha256 = \"{OTHER}\" }}]"
            )),
            &["project[p2].tokens[#1].name"],
        ),
        (
            project(&format!(
                "id = \"p2\"\ntokens = [{{ name = \"x\", sha256 = \"{OTHER}\" }}, {{ name = \"x\", sha256 = \"{WEB}\" }}]"
            )),
            &["project[p2].tokens[x].name"],
        ),
        (
            project("id = \"p2\"\ntokens = [{ name = \"x\", sha256 = \"zz\" }]"),
            &["project[p2].tokens[x].sha256"],
        ),
        (
            project("id = \"p2\"\ntokens = [{ name = \"x\" }]"),
            &["project[p2].tokens[x].sha256"],
        ),
        (
            // The project in `head` comes first, so the later token is the one reported.
            project(&format!(
                "id = \"p2\"\ntokens = [{{ name = \"x\", sha256 = \"{CI}\" }}]"
            )),
            &["project[p1].tokens[t1].sha256"],
        ),
        (
            config(
                &format!("[server]\nadmin_token_sha256 = \"{CI}\""),
                "",
                STATIC,
                "",
            ),
            &["project[p1].tokens[t1].sha256"],
        ),
        (
            project(&format!(
                "id = \"p2\"\ntokens = [{{ name = \"x\", sha256 = \"{}\" }}]",
                OTHER.to_uppercase()
            )),
            &[],
        ),
    ]);
}

/// Security groups: ids, protocol, port and port range bounds, both set, sources.
#[test]
fn rejects_bad_security_groups() {
    let rule = |rule: &str| {
        head(&format!(
            "[[security_group]]\nid = \"sg\"\ninbound = [{{ {rule} }}]"
        ))
    };
    let at = "security_group[sg].inbound[0]";
    assert_cases(&[
        (
            rule("protocol = \"udp\", port = 53, source = \"any\""),
            &[&format!("{at}.protocol")],
        ),
        (rule("port = 0, source = \"any\""), &[&format!("{at}.port")]),
        (
            rule("port = 70000, source = \"any\""),
            &[&format!("{at}.port")],
        ),
        (
            rule("port = -1, source = \"any\""),
            &[&format!("{at}.port")],
        ),
        (
            rule("port_range = [10, 5], source = \"any\""),
            &[&format!("{at}.port_range")],
        ),
        (
            rule("port_range = [0, 5], source = \"any\""),
            &[&format!("{at}.port_range")],
        ),
        (
            rule("port_range = [1, 65536], source = \"any\""),
            &[&format!("{at}.port_range")],
        ),
        (
            rule("port = 80, port_range = [1, 5], source = \"any\""),
            &[&format!("{at}.port_range")],
        ),
        (
            rule("port_range = [1, 2, 3], source = \"any\""),
            &[&format!("{at}.port_range")],
        ),
        (
            rule("port = 80, source = \"10.0.0.0/33\""),
            &[&format!("{at}.source")],
        ),
        (
            rule("port = 80, source = \"anywhere\""),
            &[&format!("{at}.source")],
        ),
        (rule("port = 80"), &[&format!("{at}.source")]),
        (rule("source = \"::/0\""), &[]),
        (
            head("[[security_group]]\nid = \"sg\"\n[[security_group]]\nid = \"sg\""),
            &["security_group[sg].id"],
        ),
        (
            head("[[security_group]]\nid = \"s g\""),
            &["security_group[#1].id"],
        ),
    ]);
}

/// Endpoints: ids, references to projects, listeners and security groups, limits, timeouts.
/// `[cluster]`: a Redis URL is required, ids and the lease are checked, every problem is
/// named; the replica id defaults to `<host>-<pid>`.
#[test]
fn cluster_settings_are_checked() {
    assert_cases(&[
        (tables("[cluster]"), &["cluster.redis"]),
        (
            tables(
                "[cluster]\nredis = \"http://r:6379\"\nreplica_id = \"a b\"\nlease_seconds = 0\nkey_prefix = \"\"",
            ),
            &[
                "cluster.redis",
                "cluster.replica_id",
                "cluster.lease_seconds",
                "cluster.key_prefix",
            ],
        ),
        (
            tables("[cluster]\nredis = \"redis://r:6379\"\nleader = true"),
            &["cluster.leader"],
        ),
        (
            tables("[cluster]\nredis = \"rediss://r:6380\"\nreplica_id = \"r-1\""),
            &[],
        ),
    ]);
    let config = load(&tables("[cluster]\nredis = \"redis://r:6379\"")).unwrap();
    let cluster = config.cluster.unwrap();
    assert!(
        cluster
            .replica_id
            .ends_with(&format!("-{}", std::process::id()))
    );
    assert_eq!(cluster.lease, Duration::from_secs(5));
    assert_eq!(cluster.key_prefix, "portico");
    assert!(load(&tables("")).unwrap().cluster.is_none());
}

/// A Kubernetes workload defaults its Service to its own name and its credentials to the
/// pod's service account.
#[test]
fn kubernetes_workers_get_their_defaults() {
    let config = load(&workers(
        "kind = \"kubernetes\"\nnamespace = \"models\"\nstatefulset = \"vllm\"\nport = 8000",
    ))
    .unwrap();
    let WorkerKind::Kubernetes(k) = &config.endpoints[0].workers.kind else {
        panic!("{:?}", config.endpoints[0].workers.kind);
    };
    assert_eq!(
        (k.resource, k.name.as_str(), k.service.as_str()),
        ("statefulsets", "vllm", "vllm")
    );
    assert_eq!(k.api_server, None);
    assert_eq!(
        k.token_file,
        PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token")
    );
}

/// CORS origins are kept as browsers send them (lower case, no path); `*` alone allows any.
#[test]
fn cors_origins_are_normalized() {
    let config = load(&keys(r#"cors_origins = ["HTTPS://Console.Example:9090"]"#)).unwrap();
    let cors = &config.endpoints[0].cors;
    assert_eq!(cors.origins(), ["https://console.example:9090"]);
    assert!(cors.allows(b"https://console.example:9090"));
    assert!(!cors.allows(b"https://console.example"));
    let any = load(&keys(r#"cors_origins = ["*"]"#)).unwrap();
    assert!(any.endpoints[0].cors.allows(b"null"));
    let off = load(&keys("")).unwrap();
    assert!(
        !off.endpoints[0]
            .cors
            .allows(b"https://console.example:9090")
    );
}

#[test]
fn rejects_bad_endpoint_fields() {
    assert_cases(&[
        (
            keys("").replace("project = \"p1\"", "project = \"p9\""),
            &["endpoint[e1].project"],
        ),
        (
            keys("security_groups = [\"sg-none\"]"),
            &["endpoint[e1].security_groups[0]"],
        ),
        (
            head("[[security_group]]\nid = \"sg\"").replace(
                "project = \"p1\"",
                "project = \"p1\"\nsecurity_groups = [\"sg\", \"sg\"]",
            ),
            &["endpoint[e1].security_groups[1]"],
        ),
        (
            keys("listeners = [\"internal\"]"),
            &["endpoint[e1].listeners[0]"],
        ),
        (
            keys("listeners = [\"public\", \"public\"]"),
            &["endpoint[e1].listeners[1]"],
        ),
        (keys("listeners = []"), &["endpoint[e1].listeners"]),
        (keys("max_body_bytes = 0"), &["endpoint[e1].max_body_bytes"]),
        (
            keys(r#"cors_origins = ["*", "https://a.example"]"#),
            &["endpoint[e1].cors_origins"],
        ),
        (
            keys(
                r#"cors_origins = ["https://a.example/app", "ftp://b", "c.example", "http://", "https://a.example:99999"]"#,
            ),
            &[
                "endpoint[e1].cors_origins[0]",
                "endpoint[e1].cors_origins[1]",
                "endpoint[e1].cors_origins[2]",
                "endpoint[e1].cors_origins[3]",
                "endpoint[e1].cors_origins[4]",
            ],
        ),
        (
            keys("timeouts = { connect_ms = 0 }"),
            &["endpoint[e1].timeouts.connect_ms"],
        ),
        (
            keys("timeouts = { first_byte_seconds = 0 }"),
            &["endpoint[e1].timeouts.first_byte_seconds"],
        ),
        (
            tables("[endpoint.timeouts]\nidle_seconds = 0"),
            &["endpoint[e1].timeouts.idle_seconds"],
        ),
        (
            format!(
                "{}\n[[endpoint]]\nid = \"e1\"\nproject = \"p1\"\nworkers = {{ {} }}",
                keys(""),
                STATIC.replace('\n', ", ")
            ),
            &["endpoint[e1].id"],
        ),
        (
            format!(
                "{}\n[[endpoint]]\nproject = \"p1\"\nworkers = {{ {} }}",
                keys(""),
                STATIC.replace('\n', ", ")
            ),
            &["endpoint[#2].id"],
        ),
        (
            keys("").replace("project = \"p1\"\n", ""),
            &["endpoint[e1].project"],
        ),
        (
            keys("").replace("id = \"e1\"", "id = \"e/1\""),
            &["endpoint[#1].id"],
        ),
    ]);
}

/// Workers: kind, command/urls/env by kind, URL shape, paths, startup timeout, protocol.
#[test]
fn rejects_bad_workers() {
    let w = "endpoint[e1].workers";
    let process = "kind = \"process\"\ncommand = [\"w\", \"{port}\"]";
    assert_cases(&[
        (
            keys("")
                .replace("\n[endpoint.workers]\n", "\n[endpoint.other]\n")
                .replace(
                    "[endpoint.other]\nkind = \"static\"\nurls = [\"http://127.0.0.1:8001\"]",
                    "",
                ),
            &[w],
        ),
        // Without `kind`: `urls` alone means static workers, `command` alone process
        // workers; anything else must name it.
        (workers("urls = [\"http://127.0.0.1:1\"]"), &[]),
        (workers("command = [\"w\", \"{port}\"]"), &[]),
        (
            workers("command = [\"w\"]\nurls = [\"http://127.0.0.1:1\"]"),
            &[&format!("{w}.kind")],
        ),
        (
            workers("urls = [\"http://127.0.0.1:1\"]\nscale_command = [\"s\", \"{replicas}\"]"),
            &[&format!("{w}.kind")],
        ),
        (workers("health_path = \"/h\""), &[&format!("{w}.kind")]),
        (
            workers("kind = \"kubernetes\""),
            &[&format!("{w}.namespace"), w, &format!("{w}.port")],
        ),
        (
            workers(
                "kind = \"kubernetes\"\nnamespace = \"Models\"\ndeployment = \"a\"\nstatefulset = \"b\"\nport = 0\nurls = [\"http://a:1\"]",
            ),
            &[
                &format!("{w}.namespace"),
                w,
                &format!("{w}.port"),
                &format!("{w}.urls"),
            ],
        ),
        (
            workers(
                "kind = \"kubernetes\"\nnamespace = \"models\"\nstatefulset = \"vllm\"\nservice = \"-x\"\nport = 8000\napi_server = \"ftp://x\"",
            ),
            &[&format!("{w}.service"), &format!("{w}.api_server")],
        ),
        (
            workers(
                "kind = \"kubernetes\"\nnamespace = \"models\"\ndeployment = \"vllm\"\nport = 8000\napi_server = \"http://127.0.0.1:8001\"",
            ),
            &[],
        ),
        (
            workers(&format!("{process}\nnamespace = \"models\"\nport = 80")),
            &[&format!("{w}.namespace"), &format!("{w}.port")],
        ),
        (
            workers("kind = \"command\""),
            &[&format!("{w}.scale_command"), w],
        ),
        (
            workers(
                "kind = \"command\"\nscale_command = [\"s\"]\nurls = [\"http://a:1\"]\ndns = \"a:1\"",
            ),
            &[w],
        ),
        (
            workers(
                "kind = \"command\"\nscale_command = []\ndns = \"no port\"\ndns_server = \"x\"",
            ),
            &[
                &format!("{w}.scale_command"),
                &format!("{w}.dns"),
                &format!("{w}.dns_server"),
            ],
        ),
        (
            workers(
                "kind = \"command\"\nscale_command = [\"s\"]\nurls = [\"http://a:1\"]\ndns_refresh_seconds = 9",
            ),
            &[w],
        ),
        (
            workers(
                "kind = \"command\"\nscale_command = [\"s\"]\ncommand = [\"w\"]\ndns = \"svc.ns:8000\"",
            ),
            &[&format!("{w}.command")],
        ),
        (
            workers(
                "kind = \"command\"\nscale_command = [\"s\", \"{replicas}\"]\ndns = \"svc.ns:8000\"\ndns_server = \"10.0.0.10:53\"",
            ),
            &[],
        ),
        (
            workers(&format!(
                "{process}\nscale_command = [\"s\"]\ndns = \"a:1\""
            )),
            &[&format!("{w}.scale_command"), &format!("{w}.dns")],
        ),
        (workers("kind = \"docker\""), &[&format!("{w}.kind")]),
        (workers("kind = \"process\""), &[&format!("{w}.command")]),
        (
            workers("kind = \"process\"\ncommand = []"),
            &[&format!("{w}.command")],
        ),
        (
            workers("kind = \"process\"\ncommand = [\"\"]"),
            &[&format!("{w}.command[0]")],
        ),
        (
            workers(&format!("{process}\nurls = [\"http://127.0.0.1:1\"]")),
            &[&format!("{w}.urls")],
        ),
        (
            workers(&format!("{process}\nenv = {{ \"A=B\" = \"x\" }}")),
            &[&format!("{w}.env.\"A=B\"")],
        ),
        (workers(&format!("{process}\nenv = {{ A = \"x\" }}")), &[]),
        (workers("kind = \"static\""), &[&format!("{w}.urls")]),
        (
            workers("kind = \"static\"\nurls = []"),
            &[&format!("{w}.urls")],
        ),
        (
            workers(&format!("{STATIC}\ncommand = [\"w\"]")),
            &[&format!("{w}.command")],
        ),
        (
            workers(&format!("{STATIC}\nenv = {{ A = \"x\" }}")),
            &[&format!("{w}.env")],
        ),
        (
            workers("kind = \"static\"\nurls = [\"http://a:1\", \"ftp://b:2\"]"),
            &[&format!("{w}.urls[1]")],
        ),
        (
            workers("kind = \"static\"\nurls = [\"127.0.0.1:8000\"]"),
            &[&format!("{w}.urls[0]")],
        ),
        (
            workers("kind = \"static\"\nurls = [\"http://a:1/v1\"]"),
            &[&format!("{w}.urls[0]")],
        ),
        (
            workers("kind = \"static\"\nurls = [\"http://a:1/?x=1\"]"),
            &[&format!("{w}.urls[0]")],
        ),
        (
            workers("kind = \"static\"\nurls = [\"http://u:p@a:1\"]"),
            &[&format!("{w}.urls[0]")],
        ),
        (
            workers("kind = \"static\"\nurls = [\"http://\"]"),
            &[&format!("{w}.urls[0]")],
        ),
        (
            workers("kind = \"static\"\nurls = [\"http://a/\", \"http://[::1]:9\"]"),
            &[],
        ),
        (
            workers("kind = \"static\"\nurls = [\"https://a/\"]"),
            &[&format!("{w}.urls[0]")],
        ),
        (
            workers(&format!("{STATIC}\nhealth_path = \"health\"")),
            &[&format!("{w}.health_path")],
        ),
        (
            workers(&format!("{STATIC}\nmetrics_path = \"\"")),
            &[&format!("{w}.metrics_path")],
        ),
        (
            workers(&format!("{STATIC}\nstartup_timeout_seconds = 0")),
            &[&format!("{w}.startup_timeout_seconds")],
        ),
        (
            workers(&format!("{STATIC}\nprotocol = \"h3\"")),
            &[&format!("{w}.protocol")],
        ),
    ]);
}

/// Scaling: the scaler's own checks under the endpoint's key path, plus metric and
/// custom_metric consistency.
#[test]
fn rejects_bad_scaling() {
    let s = |body: &str| tables(&format!("[endpoint.scaling]\n{body}"));
    let at = "endpoint[e1].scaling";
    assert_cases(&[
        (
            s("min_workers = 3\nmax_workers = 2"),
            &[&format!("{at}.max_workers")],
        ),
        (s("max_workers = 0"), &[&format!("{at}.max_workers")]),
        (s("metric = \"latency\""), &[&format!("{at}.metric")]),
        (s("metric = \"custom\""), &[&format!("{at}.custom_metric")]),
        (
            s("custom_metric = \"x\""),
            &[&format!("{at}.custom_metric")],
        ),
        (
            s("metric = \"rps\"\ncustom_metric = \"x\""),
            &[&format!("{at}.custom_metric")],
        ),
        (
            s("metric = \"custom\"\ncustom_metric = \"9 bad\""),
            &[&format!("{at}.custom_metric")],
        ),
        (s("target = 0"), &[&format!("{at}.target")]),
        (s("target = nan"), &[&format!("{at}.target")]),
        (
            s("panic_window_seconds = 120"),
            &[&format!("{at}.panic_window_seconds")],
        ),
        (
            s("panic_threshold = 0.5"),
            &[&format!("{at}.panic_threshold")],
        ),
        (
            s("stable_window_seconds = 0\npanic_window_seconds = 0"),
            &[
                &format!("{at}.stable_window_seconds"),
                &format!("{at}.panic_window_seconds"),
            ],
        ),
        (
            s("cold_start_timeout_seconds = 0"),
            &[&format!("{at}.cold_start_timeout_seconds")],
        ),
        (
            s("min_workers = 2\nmax_workers = 2\nmetric = \"rps\"\ntarget = 0.8"),
            &[],
        ),
    ]);
    let config = load(&s(
        "metric = \"custom\"\ncustom_metric = \"vllm:gpu_cache_usage_perc\"\ntarget = 0.8",
    ))
    .unwrap();
    assert_eq!(
        config.endpoints[0].scaling.metric,
        Metric::Custom("vllm:gpu_cache_usage_perc".into())
    );
}

/// Balance strategies: the two supported, later ones "not supported yet", others unknown.
#[test]
fn rejects_bad_balance() {
    let b = |strategy: &str| tables(&format!("[endpoint.balance]\nstrategy = \"{strategy}\""));
    assert_cases(&[
        (b("session"), &["endpoint[e1].balance.strategy"]),
        (b("random"), &["endpoint[e1].balance.strategy"]),
        (b("round_robin"), &[]),
    ]);
    assert!(
        problems(&b("prefix"))[0].contains("not supported yet"),
        "{:?}",
        problems(&b("prefix"))
    );
}

/// Async: routes, counts, TTL, webhook allow-list URLs, queue backend.
#[test]
fn rejects_bad_async() {
    let a = |body: &str| tables(&format!("[endpoint.async]\n{body}"));
    let at = "endpoint[e1].async";
    assert_cases(&[
        (a("routes = [\"v1/chat\"]"), &[&format!("{at}.routes[0]")]),
        (a("routes = [\"/v1/x?y\"]"), &[&format!("{at}.routes[0]")]),
        (
            a("routes = [\"/a\", \"/a\"]"),
            &[&format!("{at}.routes[1]")],
        ),
        (
            a("concurrency_per_worker = 0"),
            &[&format!("{at}.concurrency_per_worker")],
        ),
        (a("max_attempts = 0"), &[&format!("{at}.max_attempts")]),
        (a("ttl_seconds = 0"), &[&format!("{at}.ttl_seconds")]),
        (
            a("webhook_allow = [\"hooks.example.com\"]"),
            &[&format!("{at}.webhook_allow[0]")],
        ),
        (
            a("webhook_allow = [\"https://ok.example/\", \"ftp://x/\"]"),
            &[&format!("{at}.webhook_allow[1]")],
        ),
        (a("queue = \"memcached://x\""), &[&format!("{at}.queue")]),
        (a("queue = \"redis://\""), &[&format!("{at}.queue")]),
        (a("queue = \"\""), &[&format!("{at}.queue")]),
        (a(""), &[]),
    ]);
    for (queue, backend) in [
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        (
            "rediss://:secret@redis.internal:6380/2",
            "rediss://:secret@redis.internal:6380/2",
        ),
    ] {
        let config = load(&a(&format!("queue = \"{queue}\""))).unwrap();
        assert_eq!(
            config.endpoints[0].async_.as_ref().unwrap().queue,
            QueueBackend::Redis(backend.into())
        );
    }
}

/// Relative paths resolve against the config file's directory; absolute ones stay.
#[test]
fn relative_paths_resolve_against_the_config_dir() {
    let text = head(
        "[server]\nstate_dir = \"state\"\naccess_log = \"/var/log/portico.log\"\n\n[object_store]\nurl = \"file://results\"",
    );
    let config = Config::from_toml_str(&text, Path::new("/etc/portico")).unwrap();
    assert_eq!(config.server.state_dir, Path::new("/etc/portico/state"));
    assert_eq!(
        config.server.access_log.as_deref(),
        Some(Path::new("/var/log/portico.log"))
    );
    assert_eq!(config.object_store.url, "file:///etc/portico/results");
}

/// A missing file is a read error with one human line.
#[test]
fn missing_file_is_a_read_error() {
    let err = Config::load(Path::new("/nonexistent/portico.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert_eq!(err.problems().len(), 1);
    assert!(err.to_string().contains("/nonexistent/portico.toml"));
}

/// Problems print as `path: message`, and the error lists them all.
#[test]
fn problems_print_with_their_path() {
    let err = load(&keys("max_body_bytes = 0\npublic = 3")).unwrap_err();
    assert_eq!(
        err.problems(),
        [
            "endpoint[e1].public: invalid type: integer `3`, expected a boolean",
            "endpoint[e1].max_body_bytes: must be >= 1",
        ]
    );
    assert_eq!(
        err.to_string(),
        "invalid configuration (2 problems)\n  endpoint[e1].public: invalid type: integer `3`, \
         expected a boolean\n  endpoint[e1].max_body_bytes: must be >= 1"
    );
}

/// A `FileConfig` built in code converts with `TryFrom`, with the same checks.
#[test]
fn file_config_converts_with_try_from() {
    let mut file = FileConfig::default();
    file.project.push(file::FileProject {
        id: "p1".into(),
        tokens: Vec::new(),
    });
    file.endpoint.push(file::FileEndpoint {
        id: "e1".into(),
        project: "p1".into(),
        workers: Some(file::FileWorkers {
            kind: "static".into(),
            urls: Some(vec!["http://127.0.0.1:1".into()]),
            ..file::FileWorkers::default()
        }),
        ..file::FileEndpoint::default()
    });
    let config = Config::try_from(file.clone()).unwrap();
    assert_eq!(config.endpoints[0].listeners, ["public"]);
    file.endpoint[0].project = "p2".into();
    let err = Config::try_from(file).unwrap_err();
    assert_eq!(err.problems().len(), 1);
    assert!(err.problems()[0].starts_with("endpoint[e1].project: "));
}

/// `[endpoint.health]` gets its defaults, and out-of-range values are named by key path.
#[test]
fn health_settings_are_checked() {
    let config = load(&config("", "", STATIC, "")).unwrap();
    let health = &config.endpoints[0].health;
    assert_eq!(health.interval, Duration::from_millis(2000));
    assert_eq!(health.timeout, Duration::from_millis(1000));
    assert_eq!(
        (health.healthy_threshold, health.unhealthy_threshold),
        (2, 3)
    );
    assert_eq!(health.eject_after_failures, 5);
    assert_eq!(health.eject, Duration::from_secs(10));
    let h = "endpoint[e1].health";
    assert_cases(&[
        (
            tables("[endpoint.health]\ninterval_ms = 0\neject_seconds = 0"),
            &[&format!("{h}.interval_ms"), &format!("{h}.eject_seconds")],
        ),
        (
            tables("[endpoint.health]\ninterval_ms = 500\ntimeout_ms = 900"),
            &[&format!("{h}.timeout_ms")],
        ),
        (
            tables("[endpoint.health]\nhealthy_threshold = 0\nunhealthy_threshold = 0"),
            &[
                &format!("{h}.healthy_threshold"),
                &format!("{h}.unhealthy_threshold"),
            ],
        ),
        (
            tables("[endpoint.health]\neject_after_failures = 0\nprobe = true"),
            &[&format!("{h}.eject_after_failures"), &format!("{h}.probe")],
        ),
    ]);
}

/// `[endpoint.websocket]` gets its defaults, and bad limits are named by key path.
#[test]
fn websocket_settings_are_checked() {
    let config = load(&config("", "", STATIC, "")).unwrap();
    let ws = &config.endpoints[0].websocket;
    assert_eq!(ws.max_message_bytes, 16 * 1024 * 1024);
    assert_eq!(ws.max_frame_bytes, 16 * 1024 * 1024);
    assert_eq!(ws.idle_timeout, Duration::from_secs(600));
    let w = "endpoint[e1].websocket";
    assert_cases(&[
        (
            tables("[endpoint.websocket]\nmax_message_bytes = 0\nidle_timeout_seconds = 0"),
            &[
                &format!("{w}.max_message_bytes"),
                &format!("{w}.idle_timeout_seconds"),
            ],
        ),
        (
            tables("[endpoint.websocket]\nmax_message_bytes = 1024\nmax_frame_bytes = 2048"),
            &[&format!("{w}.max_frame_bytes")],
        ),
        (
            tables("[endpoint.websocket]\nmax_frame_bytes = 2000000000"),
            &[&format!("{w}.max_frame_bytes")],
        ),
    ]);
}

const ALERTS_OK: &str = r#"
[[alert]]
name = "high-errors"
endpoint = "e1"
metric = "error_rate"
operator = ">"
threshold = 0.05
for_seconds = 120
min_requests = 20

[[alert]]
name = "no-workers"
endpoint = "*"
metric = "ready_workers"
operator = "<"
threshold = 1
notify = ["email"]

[alerts]
webhook_url = "https://hooks.example.com/portico"
email_to = ["oncall@example.com", "Ops <ops@example.com>"]
evaluate_every_seconds = 2

[smtp]
host = "smtp.example.com"
from = "Portico <alerts@example.com>"
username = "portico"
password = "secret"
"#;

/// `[[alert]]`, `[alerts]` and `[smtp]` load into typed values with their defaults.
#[test]
fn alerts_load_with_typed_values() {
    let config = load(&tables(ALERTS_OK)).unwrap();
    let alerts = &config.alerts;
    assert_eq!(alerts.evaluate_every, Duration::from_secs(2));
    assert_eq!(alerts.webhook_timeout, Duration::from_secs(10));
    assert_eq!(
        alerts
            .webhook_url
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("https://hooks.example.com/portico")
    );
    assert_eq!(alerts.email_to.len(), 2);
    assert_eq!(alerts.email_to[1].email.to_string(), "ops@example.com");
    assert_eq!(
        alerts.rules[0],
        AlertRule {
            name: "high-errors".into(),
            endpoint: AlertScope::Endpoint("e1".into()),
            metric: AlertMetric::ErrorRate,
            operator: AlertOperator::Above,
            threshold: 0.05,
            for_: Duration::from_secs(120),
            notify: vec![AlertChannel::Webhook, AlertChannel::Email],
            min_requests: 20,
        }
    );
    let second = &alerts.rules[1];
    assert_eq!(second.endpoint, AlertScope::Each);
    assert!(second.endpoint.covers("anything"));
    assert_eq!(second.operator, AlertOperator::Below);
    assert_eq!(second.threshold, 1.0);
    assert_eq!(second.for_, Duration::ZERO);
    assert_eq!(second.notify, [AlertChannel::Email]);
    assert_eq!(second.min_requests, 10);
    let smtp = alerts.smtp.as_ref().unwrap();
    assert_eq!(smtp.host, "smtp.example.com");
    assert_eq!(smtp.port, 587);
    assert_eq!(smtp.tls, SmtpTls::Required);
    assert_eq!(smtp.timeout, Duration::from_secs(10));
    assert_eq!(
        smtp.credentials,
        Some(("portico".to_string(), "secret".to_string()))
    );
    assert_eq!(smtp.from.email.to_string(), "alerts@example.com");
    // The password stays out of logs.
    assert!(!format!("{smtp:?}").contains("secret"));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

/// Without any alert keys there are no rules and the defaults stand.
#[test]
fn alerts_default_when_absent() {
    let config = load(&tables("")).unwrap();
    assert_eq!(config.alerts, Alerts::default());
    assert_eq!(config.alerts.evaluate_every, Duration::from_secs(5));
    assert!(config.alerts.smtp.is_none());
}

/// A rule with no channel configured loads, with a warning that it only shows in the
/// admin API; every operator and metric name is accepted.
#[test]
fn alert_without_channels_warns_and_every_name_parses() {
    for metric in AlertMetric::ALL {
        for operator in AlertOperator::ALL {
            let async_table = if metric == AlertMetric::AsyncQueueDepth {
                "[endpoint.async]\nroutes = [\"/v1/x\"]\n"
            } else {
                ""
            };
            let text = tables(&format!(
                "{async_table}\n[[alert]]\nname = \"a\"\nendpoint = \"e1\"\nmetric = \"{}\"\n\
                 operator = \"{}\"\nthreshold = 1",
                metric.as_str(),
                operator.as_str()
            ));
            let config = load(&text).unwrap_or_else(|err| panic!("{text}\n{err}"));
            assert_eq!(config.alerts.rules[0].metric, metric);
            assert_eq!(config.alerts.rules[0].operator, operator);
            assert!(config.alerts.rules[0].notify.is_empty());
            assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
            assert_eq!(config.warnings[0].path, "alert[a].notify");
        }
    }
}

/// Every mistake in alert rules, `[alerts]` and `[smtp]` is named by its key path.
#[test]
fn rejects_bad_alerts() {
    let rule = |extra: &str| {
        tables(&format!(
            "[[alert]]\nname = \"r\"\nendpoint = \"e1\"\nmetric = \"error_rate\"\n\
             operator = \">\"\nthreshold = 0.5\n{extra}"
        ))
    };
    let with_webhook = "[alerts]\nwebhook_url = \"http://127.0.0.1:1/hook\"";
    let smtp = "[smtp]\nhost = \"127.0.0.1\"\nfrom = \"a@example.com\"";
    assert_cases(&[
        (
            tables("[[alert]]\nthreshold = 1"),
            &[
                "alert[#1].name",
                "alert[#1].endpoint",
                "alert[#1].metric",
                "alert[#1].operator",
            ],
        ),
        (
            tables(
                "[[alert]]\nname = \"x\"\nendpoint = \"e1\"\nmetric = \"rps\"\noperator = \"!=\"",
            ),
            &["alert[x].metric", "alert[x].operator", "alert[x].threshold"],
        ),
        (
            rule("").replace("name = \"r\"", "name = \"bad name\""),
            &["alert[#1].name"],
        ),
        (
            format!(
                "{}\n[[alert]]\nname = \"r\"\nendpoint = \"*\"\nmetric = \"ready_workers\"\noperator = \"<\"\nthreshold = 1",
                rule("")
            ),
            &["alert[r].name"],
        ),
        (
            rule("").replace("endpoint = \"e1\"", "endpoint = \"e9\""),
            &["alert[r].endpoint"],
        ),
        (rule("").replace("0.5", "5"), &["alert[r].threshold"]),
        (
            rule("")
                .replace("error_rate", "pending_requests")
                .replace("0.5", "-1"),
            &["alert[r].threshold"],
        ),
        (rule("min_requests = 0"), &["alert[r].min_requests"]),
        (
            rule("min_requests = 5").replace("error_rate", "ready_workers"),
            &["alert[r].min_requests"],
        ),
        (
            rule("").replace("error_rate", "async_queue_depth"),
            &["alert[r].metric"],
        ),
        (rule("notify = [\"webhook\"]"), &["alert[r].notify[0]"]),
        (rule("notify = [\"email\"]"), &["alert[r].notify[0]"]),
        (
            rule(
                "notify = [\"email\"]
[alerts]
email_to = [\"a@example.com\"]",
            ),
            &["alert[r].notify[0]", "alerts.email_to"],
        ),
        (
            rule(&format!("notify = [\"email\"]\n{smtp}")),
            &["alert[r].notify[0]"],
        ),
        (
            rule(&format!(
                "notify = [\"webhook\", \"webhook\", \"pager\"]\n{with_webhook}"
            )),
            &["alert[r].notify[1]", "alert[r].notify[2]"],
        ),
        (rule("colour = \"red\""), &["alert[r].colour"]),
        (rule("for_seconds = -1"), &["alert[r].for_seconds"]),
        (
            tables(
                "[alerts]\nwebhook_url = \"ftp://x\"\nevaluate_every_seconds = 0\nwebhook_timeout_seconds = 0\nemail_to = [\"nobody\"]\nsms = 1",
            ),
            &[
                "alerts.webhook_url",
                "alerts.evaluate_every_seconds",
                "alerts.webhook_timeout_seconds",
                "alerts.email_to[0]",
                "alerts.email_to",
                "alerts.sms",
            ],
        ),
        (
            tables(&format!(
                "[alerts]\nemail_to = [\"a@example.com\", \"A <a@example.com>\"]\n{smtp}"
            )),
            &["alerts.email_to[1]"],
        ),
        (
            tables(
                "[smtp]\nport = 70000\nstarttls = \"maybe\"\ntimeout_seconds = 0\nusername = \"u\"\ntls = true",
            ),
            &[
                "smtp.host",
                "smtp.from",
                "smtp.port",
                "smtp.starttls",
                "smtp.timeout_seconds",
                "smtp.password",
                "smtp.tls",
            ],
        ),
        (
            tables("[smtp]\nhost = \"mail example\"\nfrom = \"not an address\"\npassword = \"p\""),
            &["smtp.host", "smtp.from", "smtp.username"],
        ),
        (head("smtp = 5"), &["smtp"]),
        (head("alert = 5"), &["alert"]),
    ]);
}

/// Alert problems print with their key path and a useful message.
#[test]
fn alert_problems_say_what_is_wrong() {
    let text = tables(
        "[[alert]]\nname = \"r\"\nendpoint = \"e9\"\nmetric = \"error_rate\"\noperator = \">\"\n\
         threshold = 5\nnotify = [\"webhook\"]",
    );
    let problems = problems(&text);
    for expected in [
        "alert[r].endpoint: unknown endpoint `e9` (defined: e1)",
        "alert[r].threshold: 5 is out of range: error_rate is a fraction 0..=1",
        "alert[r].notify[0]: \"webhook\" needs [alerts].webhook_url",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "missing {expected:?} in {problems:#?}"
        );
    }
}

/// `starttls` takes each of its modes; off with a password warns.
#[test]
fn smtp_tls_modes() {
    for (text, mode) in [
        ("required", SmtpTls::Required),
        ("opportunistic", SmtpTls::Opportunistic),
        ("off", SmtpTls::Off),
        ("implicit", SmtpTls::Implicit),
    ] {
        let config = load(&tables(&format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = 2525\nfrom = \"a@example.com\"\nstarttls = \"{text}\"\n\
             username = \"u\"\npassword = \"p\""
        )))
        .unwrap();
        let smtp = config.alerts.smtp.unwrap();
        assert_eq!(smtp.tls, mode);
        assert_eq!(smtp.port, 2525);
        let warned = config.warnings.iter().any(|w| w.path == "smtp.starttls");
        assert_eq!(warned, mode == SmtpTls::Off);
    }
}
