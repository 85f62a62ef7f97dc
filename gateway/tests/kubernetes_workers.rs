//! `kind = "kubernetes"` against a minimal fake API server written here (no real cluster is
//! available): Portico reads and patches the Deployment's `scale` subresource with the
//! service account's bearer token, lists and watches the Service's EndpointSlices, routes
//! to exactly the ready addresses as events arrive, and lists again when a watch ends.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Http1, TestGateway, TestWorker, admin, endpoint_config, eventually, served_by};

const TOKEN: &str = "test-service-account-token";
const SCALE: &str = "/apis/apps/v1/namespaces/models/deployments/vllm/scale";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/models/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dvllm";
const WAIT: Duration = Duration::from_secs(20);
const ECHO: &str = "/project/p1/endpoint/chat/echo";

/// What the fake API server holds and saw.
#[derive(Default)]
struct State {
    replicas: u32,
    patches: Vec<u32>,
    lists: usize,
    unauthorized: usize,
    /// PATCHes still to refuse with 403, as with RBAC missing.
    forbid_patches: usize,
    /// Slice name → (address, ready).
    slices: BTreeMap<String, Vec<(String, bool)>>,
    version: u64,
    /// Open watches: each line sent is written as a chunk; `None` ends the watch.
    watchers: Vec<Sender<Option<String>>>,
}

/// A fake Kubernetes API server on a loopback port, one thread per connection.
struct FakeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        FakeApi { addr, state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Sets slice `name` and tells the watches (`ADDED`, `MODIFIED` or `DELETED`).
    fn event(&self, kind: &str, name: &str, endpoints: &[(&str, bool)]) {
        let mut state = self.state();
        state.version += 1;
        if kind == "DELETED" {
            state.slices.remove(name);
        } else {
            state.slices.insert(
                name.to_string(),
                endpoints.iter().map(|(a, r)| (a.to_string(), *r)).collect(),
            );
        }
        let object = slice_json(name, endpoints, state.version);
        let line = json!({"type": kind, "object": object}).to_string();
        state
            .watchers
            .retain(|watcher| watcher.send(Some(line.clone())).is_ok());
    }

    /// Sends an ERROR event (410 Gone: the watched version is too old) to every watch.
    fn expire(&self) {
        let line = json!({"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                                      "reason": "Expired"}})
        .to_string();
        self.state()
            .watchers
            .retain(|watcher| watcher.send(Some(line.clone())).is_ok());
    }

    /// Ends every open watch, as the API server does at its timeout.
    fn end_watches(&self) {
        for watcher in self.state().watchers.drain(..) {
            let _ = watcher.send(None);
        }
    }
}

fn slice_json(name: &str, endpoints: &[(&str, bool)], version: u64) -> Value {
    json!({
        "metadata": {"name": name, "resourceVersion": version.to_string(),
                     "labels": {"kubernetes.io/service-name": "vllm"}},
        "addressType": "IPv4",
        "endpoints": endpoints.iter().map(|(address, ready)| json!({
            "addresses": [address], "conditions": {"ready": ready},
        })).collect::<Vec<_>>(),
        "ports": [{"port": 8000, "protocol": "TCP"}],
    })
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut length = 0;
        let mut authorized = false;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => authorized = value.trim() == format!("Bearer {TOKEN}"),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        if !authorized {
            state.lock().unwrap().unauthorized += 1;
            respond(
                &mut stream,
                401,
                &json!({"kind": "Status", "message": "Unauthorized"}),
            );
            continue;
        }
        let watch = target.starts_with(SLICES) && target.contains("&watch=1");
        if watch {
            let (sender, events) = channel();
            state.lock().unwrap().watchers.push(sender);
            stream_events(stream, &events);
            return;
        }
        let answer = {
            let mut state = state.lock().unwrap();
            match (method.as_str(), target.as_str()) {
                ("GET", SCALE) => Some(scale_json(state.replicas)),
                ("PATCH", SCALE) if state.forbid_patches > 0 => {
                    state.forbid_patches -= 1;
                    Some(json!({"kind": "Status", "code": 403,
                                "message": "deployments.apps \"vllm\" is forbidden"}))
                }
                ("PATCH", SCALE) => {
                    let patch: Value = serde_json::from_slice(&body).unwrap();
                    let replicas = patch["spec"]["replicas"].as_u64().unwrap() as u32;
                    state.replicas = replicas;
                    state.patches.push(replicas);
                    Some(scale_json(replicas))
                }
                ("GET", SLICES) => {
                    state.lists += 1;
                    let items: Vec<Value> = state
                        .slices
                        .iter()
                        .map(|(name, endpoints)| {
                            let endpoints: Vec<(&str, bool)> =
                                endpoints.iter().map(|(a, r)| (a.as_str(), *r)).collect();
                            slice_json(name, &endpoints, state.version)
                        })
                        .collect();
                    Some(json!({"kind": "EndpointSliceList",
                                "metadata": {"resourceVersion": state.version.to_string()},
                                "items": items}))
                }
                _ => None,
            }
        };
        match answer {
            Some(answer) if answer["kind"] == "Status" => {
                let code = answer["code"].as_u64().unwrap_or(500) as u16;
                respond(&mut stream, code, &answer);
            }
            Some(answer) => respond(&mut stream, 200, &answer),
            None => respond(
                &mut stream,
                404,
                &json!({"message": format!("no {method} {target}")}),
            ),
        }
    }
}

fn scale_json(replicas: u32) -> Value {
    json!({"kind": "Scale", "spec": {"replicas": replicas}, "status": {"replicas": replicas}})
}

fn respond(stream: &mut TcpStream, status: u16, body: &Value) {
    let body = body.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
}

/// A watch: chunked JSON lines until told to end (or the client leaves).
fn stream_events(mut stream: TcpStream, events: &Receiver<Option<String>>) {
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let _ = stream.flush();
    while let Ok(Some(line)) = events.recv() {
        let line = format!("{line}\n");
        if write!(stream, "{:x}\r\n{line}\r\n", line.len()).is_err() {
            return;
        }
        let _ = stream.flush();
    }
    let _ = write!(stream, "0\r\n\r\n");
}

fn ready(gw: &TestGateway) -> u64 {
    let (status, endpoint) = admin(gw, "GET", "/admin/endpoints/chat", "");
    assert_eq!(status, 200, "{endpoint}");
    endpoint["workers"]["ready"].as_u64().unwrap()
}

/// Scale orders reach the scale subresource (read, then patched only when different; a
/// forbidden patch is logged and tried again); the workers are the ready addresses of the
/// watched EndpointSlices, event by event; a watch that ends, or reports its version gone,
/// is followed by a fresh list; every call carries the service account's token.
#[test]
fn scales_a_deployment_and_follows_its_endpointslices() {
    let api = FakeApi::start();
    api.state().forbid_patches = 1;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let port = TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gateway = TestGateway::start(&endpoint_config(
        "chat",
        "",
        "",
        &format!(
            "kind = \"kubernetes\"\nnamespace = \"models\"\ndeployment = \"vllm\"\nport = {port}\n\
             api_server = \"http://{api}\"\ntoken_file = \"{token}\"\nca_file = \"{ca}\"",
            api = api.addr,
            token = token_file.display(),
            ca = dir.path().join("no-ca.crt").display(),
        ),
        "[endpoint.health]\ninterval_ms = 300\ntimeout_ms = 300\nhealthy_threshold = 1\n\n\
         [endpoint.scaling]\nmin_workers = 1\nmax_workers = 3",
    ));

    // The first PATCH is forbidden (RBAC missing): logged with the API's message, and
    // tried again.
    eventually("min_workers patched after a refusal", WAIT, || {
        (api.state().patches == [1]).then_some(())
    });
    assert!(
        gateway
            .stderr()
            .iter()
            .chain(gateway.stdout().iter())
            .any(|l| l.contains("scaling failed") && l.contains("forbidden")),
        "the refusal is logged"
    );
    eventually("a watch", WAIT, || {
        (!api.state().watchers.is_empty()).then_some(())
    });
    let port_arg = port.to_string();
    let _first = TestWorker::start_at("127.0.0.2", &port_arg);
    api.event("ADDED", "vllm-a", &[("127.0.0.2", true)]);
    eventually("one ready worker", WAIT, || {
        (ready(&gateway) == 1).then_some(())
    });
    let mut client = Http1::connect(gateway.addr("public"));
    assert_eq!(served_by(&mut client, ECHO), format!("127.0.0.2:{port}"));

    let (status, answer) = admin(
        &gateway,
        "POST",
        "/admin/endpoints/chat/scale",
        r#"{"workers": 2}"#,
    );
    assert_eq!(status, 200, "{answer}");
    eventually("2 patched", WAIT, || {
        (api.state().patches == [1, 2]).then_some(())
    });
    let _second = TestWorker::start_at("127.0.0.3", &port_arg);
    // A pod that is not ready yet is not routed to.
    api.event(
        "MODIFIED",
        "vllm-a",
        &[
            ("127.0.0.2", true),
            ("127.0.0.3", true),
            ("127.0.0.4", false),
        ],
    );
    eventually("two ready workers", WAIT, || {
        (ready(&gateway) == 2).then_some(())
    });
    let hosts: std::collections::BTreeSet<String> =
        (0..20).map(|_| served_by(&mut client, ECHO)).collect();
    assert_eq!(hosts.len(), 2, "traffic reaches both pods: {hosts:?}");

    // The API server ends the watch: Portico lists again and watches again.
    let lists = api.state().lists;
    api.end_watches();
    eventually("a new list and watch", WAIT, || {
        let state = api.state();
        (state.lists > lists && !state.watchers.is_empty()).then_some(())
    });
    assert_eq!(ready(&gateway), 2);
    // The watched version is gone (410 in an ERROR event): list again.
    let lists = api.state().lists;
    api.expire();
    eventually("a new list after 410", WAIT, || {
        let state = api.state();
        (state.lists > lists && !state.watchers.is_empty()).then_some(())
    });
    assert_eq!(ready(&gateway), 2);

    api.event("DELETED", "vllm-a", &[]);
    eventually("no workers", WAIT, || (ready(&gateway) == 0).then_some(()));
    assert_eq!(api.state().unauthorized, 0, "every call carried the token");
    assert_eq!(api.state().replicas, 2);
}
