//! `kind = "command"` through the real binary: Portico runs a real scale script whenever the
//! desired count changes, and follows the workers through DNS, asked of a real `dnsmasq`
//! on a loopback port. The test plays the orchestrator: it reads the counts the script
//! recorded, starts and stops fakeworker processes on 127.0.0.2, 127.0.0.3…, and publishes
//! them in dnsmasq's hosts file.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{Http1, TestGateway, TestWorker, eventually, get, http};

const NAME: &str = "workers.test";
const WAIT: Duration = Duration::from_secs(20);

/// A `dnsmasq` of this test's own answering for the names of a hosts file, killed on drop.
struct Dns {
    child: Child,
    hosts: PathBuf,
    addr: SocketAddr,
}

impl Dns {
    /// Starts dnsmasq on a free UDP port (bound, then released for it).
    fn start(dir: &Path) -> Dns {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Dns::start_on(dir, port)
    }

    /// Starts dnsmasq on `port`, answering with an empty hosts file.
    fn start_on(dir: &Path, port: u16) -> Dns {
        let hosts = dir.join("hosts");
        std::fs::write(&hosts, "").unwrap();
        let binary = std::env::var("DNSMASQ").unwrap_or_else(|_| {
            ["/usr/sbin/dnsmasq", "/sbin/dnsmasq"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .unwrap_or("dnsmasq")
                .to_string()
        });
        let child = Command::new(&binary)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
            ])
            .args([
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
            ])
            .args(["--pid-file=", "--cache-size=0", "--local-ttl=0"])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("this test needs `{binary}` (apt-get install dnsmasq-base): {err}")
            });
        let dns = Dns {
            child,
            hosts,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        // Answering before any SIGHUP: one sent earlier would end it.
        eventually("dnsmasq answers", WAIT, || dns.lookup().map(|_| ()));
        dns
    }

    /// Makes `workers.test` resolve to exactly `ips`, and waits until dnsmasq says so.
    fn publish(&self, ips: &[&str]) {
        let text: String = ips.iter().map(|ip| format!("{ip} {NAME}\n")).collect();
        std::fs::write(&self.hosts, text).unwrap();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut want: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
        want.sort();
        eventually("dnsmasq serves the new hosts", WAIT, || {
            (self.lookup() == Some(want.clone())).then_some(())
        });
    }

    /// The A records of `workers.test`, asked with `dig`-like raw UDP.
    fn lookup(&self) -> Option<Vec<String>> {
        let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        let mut query = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in NAME.split('.') {
            query.push(label.len() as u8);
            query.extend_from_slice(label.as_bytes());
        }
        query.extend_from_slice(&[0, 0, 1, 0, 1]);
        socket.send_to(&query, self.addr).ok()?;
        let mut answer = [0u8; 512];
        let len = socket.recv(&mut answer).ok()?;
        let count = usize::from(u16::from_be_bytes([answer[6], answer[7]]));
        // Answers follow the question; each A record here is a 2-byte pointer name, type,
        // class, TTL, length 4 and the address: 16 bytes.
        let start = query.len();
        let mut ips: Vec<String> = (0..count)
            .filter_map(|i| {
                let at = start + i * 16;
                let ip = answer.get(at + 12..at + 16)?;
                (at + 16 <= len).then(|| format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]))
            })
            .collect();
        ips.sort();
        Some(ips)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The counts the scale script was run with, in order.
fn scale_log(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("scaled"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn chat(gw: &TestGateway) -> Value {
    let (status, _, body) = get(gw.addr("admin"), "/admin/endpoints/chat");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The `Host` the worker saw (Portico sets it to the worker's address).
fn served_by(client: &mut Http1) -> String {
    let (status, body) = client.get("/project/p1/endpoint/chat/echo");
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    support::echo_header(&echo, "host").join(",")
}

/// The scale script runs for each new count with the endpoint and the count; workers come
/// and go as DNS lists them, and traffic follows; a pin through the admin API scales the
/// other system; when DNS stops answering, the known workers keep serving.
#[test]
fn a_scale_command_and_dns_discovery_drive_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let dns = Dns::start(dir.path());
    let script = dir.path().join("scale.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 $2\" >> {}\n",
            dir.path().join("scaled").display()
        ),
    )
    .unwrap();
    // One port for every worker address: free on 127.0.0.2, and in practice on .3.
    let port = std::net::TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        r#"
[server]
admin_listen = "127.0.0.1:0"
grace_period_seconds = 1

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[project]]
id = "p1"

[[endpoint]]
id = "chat"
project = "p1"
public = true

[endpoint.workers]
kind = "command"
scale_command = ["sh", "{script}", "{{endpoint}}", "{{replicas}}"]
dns = "{NAME}:{port}"
dns_server = "{server}"
dns_refresh_seconds = 1

[endpoint.health]
interval_ms = 300
timeout_ms = 300
healthy_threshold = 1

[endpoint.scaling]
min_workers = 1
max_workers = 3
"#,
        script = script.display(),
        server = dns.addr,
    );
    let gateway = TestGateway::start(&config);
    assert_eq!(chat(&gateway)["kind"], "command");

    // The controller asks for min_workers at once.
    eventually("the script run for 1", WAIT, || {
        (scale_log(dir.path()) == ["chat 1"]).then_some(())
    });
    let port_arg = port.to_string();
    let first = TestWorker::start_at("127.0.0.2", &port_arg);
    dns.publish(&["127.0.0.2"]);
    eventually("one ready worker", WAIT, || {
        (chat(&gateway)["workers"]["ready"] == 1).then_some(())
    });
    let mut client = Http1::connect(gateway.addr("public"));
    assert_eq!(served_by(&mut client), format!("127.0.0.2:{port}"));

    let pin = |n: u32| {
        let body = format!(r#"{{"workers": {n}}}"#);
        let (status, _, answer) = http(
            gateway.addr("admin"),
            &format!(
                "POST /admin/endpoints/chat/scale HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        );
        assert_eq!(status, 200, "{answer}");
    };
    pin(2);
    eventually("the script run for 2", WAIT, || {
        (scale_log(dir.path()).last().map(String::as_str) == Some("chat 2")).then_some(())
    });
    let second = TestWorker::start_at("127.0.0.3", &port_arg);
    dns.publish(&["127.0.0.2", "127.0.0.3"]);
    eventually("two ready workers", WAIT, || {
        (chat(&gateway)["workers"]["ready"] == 2).then_some(())
    });
    let hosts: std::collections::BTreeSet<String> =
        (0..20).map(|_| served_by(&mut client)).collect();
    assert_eq!(hosts.len(), 2, "traffic reaches both workers: {hosts:?}");

    // DNS goes away: the known workers keep serving, and the failure is logged.
    let failures = || {
        gateway
            .stderr()
            .iter()
            .chain(gateway.stdout().iter())
            .filter(|l| l.contains("DNS discovery failed"))
            .count()
    };
    let before = failures();
    let port_of_dns = dns.addr.port();
    drop(dns);
    eventually("the DNS failure in the log", WAIT, || {
        (failures() > before).then_some(())
    });
    assert_eq!(chat(&gateway)["workers"]["ready"], 2);
    served_by(&mut client);

    // DNS is back and lists one worker after a pin to 1: Portico follows, and the worker
    // that left gets no more traffic.
    let dns = Dns::start_on(dir.path(), port_of_dns);
    pin(1);
    eventually("the script run for 1 again", WAIT, || {
        (scale_log(dir.path()) == ["chat 1", "chat 2", "chat 1"]).then_some(())
    });
    dns.publish(&["127.0.0.2"]);
    eventually("one worker again", WAIT, || {
        let state = chat(&gateway);
        (state["workers"]["ready"] == 1 && state["workers"]["replicas"] == serde_json::json!([]))
            .then_some(())
    });
    for _ in 0..10 {
        assert_eq!(served_by(&mut client), format!("127.0.0.2:{port}"));
    }
    drop((first, second));
}
