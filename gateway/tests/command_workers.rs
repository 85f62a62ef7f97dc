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
use support::{Http1, TestGateway, TestWorker, admin, endpoint_config, eventually, served_by};

const NAME: &str = "workers.test";
const WAIT: Duration = Duration::from_secs(20);
const ECHO: &str = "/project/p1/endpoint/chat/echo";

/// A `dnsmasq` of this test's own answering for the names of a hosts file, killed on drop.
struct Dns {
    child: Child,
    hosts: PathBuf,
    addr: SocketAddr,
}

impl Dns {
    /// Starts dnsmasq on a free port. dnsmasq listens on UDP and TCP: a port free for UDP
    /// may be taken for TCP, and then dnsmasq exits at once; another port is tried.
    fn start(dir: &Path) -> Dns {
        for _ in 0..5 {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = udp.local_addr().unwrap().port();
            let tcp_free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
            // Released for dnsmasq.
            drop(udp);
            if !tcp_free {
                continue;
            }
            if let Some(dns) = Dns::try_start_on(dir, port) {
                return dns;
            }
        }
        panic!("dnsmasq did not start on any of 5 free ports");
    }

    /// Starts dnsmasq on `port` (panics when it cannot).
    fn start_on(dir: &Path, port: u16) -> Dns {
        Dns::try_start_on(dir, port)
            .unwrap_or_else(|| panic!("dnsmasq exited at start on port {port}"))
    }

    /// Starts dnsmasq on `port`, answering with an empty hosts file; `None` when it exits
    /// before answering (the port is taken).
    fn try_start_on(dir: &Path, port: u16) -> Option<Dns> {
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
        let mut dns = Dns {
            child,
            hosts,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        // Answering before any SIGHUP: one sent earlier would end it.
        let answered = eventually("dnsmasq answers or exits", WAIT, || {
            if dns.lookup().is_some() {
                Some(true)
            } else {
                matches!(dns.child.try_wait(), Ok(Some(_))).then_some(false)
            }
        });
        answered.then_some(dns)
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
    let (status, state) = admin(gw, "GET", "/admin/endpoints/chat", "");
    assert_eq!(status, 200, "{state}");
    state
}

/// The scale script runs for each new count with the endpoint and the count; workers come
/// and go as DNS lists them, and traffic follows; a pin through the admin API scales the
/// other system; when DNS stops answering, the known workers keep serving.
#[test]
fn a_scale_command_and_dns_discovery_drive_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let dns = Dns::start(dir.path());
    let script = dir.path().join("scale.sh");
    // The script refuses while a file `refuse` exists (as an orchestrator that is down).
    let refuse = dir.path().join("refuse");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ -e {refuse} ]; then echo \"$1 $2 refused\" >> {log}; \
             echo 'orchestrator down' >&2; exit 1; fi\necho \"$1 $2\" >> {log}\n",
            refuse = refuse.display(),
            log = dir.path().join("scaled").display()
        ),
    )
    .unwrap();
    std::fs::write(&refuse, "").unwrap();
    // One port for every worker address: free on 127.0.0.2, and in practice on .3.
    let port = std::net::TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = endpoint_config(
        "chat",
        "",
        "",
        &format!(
            "kind = \"command\"\nscale_command = [\"sh\", \"{script}\", \"{{endpoint}}\", \"{{replicas}}\"]\n\
             dns = \"{NAME}:{port}\"\ndns_server = \"{server}\"\ndns_refresh_seconds = 1",
            script = script.display(),
            server = dns.addr,
        ),
        "[endpoint.health]\ninterval_ms = 300\ntimeout_ms = 300\nhealthy_threshold = 1\n\n\
         [endpoint.scaling]\nmin_workers = 1\nmax_workers = 3",
    );
    let gateway = TestGateway::start(&config);
    assert_eq!(chat(&gateway)["kind"], "command");

    // The controller asks for min_workers at once; the refused run is logged with the
    // script's output and tried again once the orchestrator is back.
    eventually("the refused run for 1", WAIT, || {
        (scale_log(dir.path()) == ["chat 1 refused"]).then_some(())
    });
    eventually("the failure in the log", WAIT, || {
        gateway
            .stderr()
            .iter()
            .chain(gateway.stdout().iter())
            .any(|l| l.contains("scale command failed") && l.contains("orchestrator down"))
            .then_some(())
    });
    std::fs::remove_file(&refuse).unwrap();
    eventually("the run for 1, retried", WAIT, || {
        (scale_log(dir.path()) == ["chat 1 refused", "chat 1"]).then_some(())
    });
    // Portico does not run these workers: it cannot restart them.
    let (status, refused) = admin(&gateway, "POST", "/admin/endpoints/chat/restart", "");
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "restart_unsupported");
    let port_arg = port.to_string();
    let first = TestWorker::start_at("127.0.0.2", &port_arg);
    dns.publish(&["127.0.0.2"]);
    eventually("one ready worker", WAIT, || {
        (chat(&gateway)["workers"]["ready"] == 1).then_some(())
    });
    let mut client = Http1::connect(gateway.addr("public"));
    assert_eq!(served_by(&mut client, ECHO), format!("127.0.0.2:{port}"));

    let pin = |n: u32| {
        let (status, answer) = admin(
            &gateway,
            "POST",
            "/admin/endpoints/chat/scale",
            &format!(r#"{{"workers": {n}}}"#),
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
        (0..20).map(|_| served_by(&mut client, ECHO)).collect();
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
    served_by(&mut client, ECHO);

    // DNS is back and lists one worker after a pin to 1: Portico follows, and the worker
    // that left gets no more traffic.
    let dns = Dns::start_on(dir.path(), port_of_dns);
    pin(1);
    eventually("the script run for 1 again", WAIT, || {
        (scale_log(dir.path()).ends_with(&["chat 2".to_string(), "chat 1".to_string()]))
            .then_some(())
    });
    dns.publish(&["127.0.0.2"]);
    eventually("one worker again", WAIT, || {
        let state = chat(&gateway);
        (state["workers"]["ready"] == 1 && state["workers"]["replicas"] == serde_json::json!([]))
            .then_some(())
    });
    for _ in 0..10 {
        assert_eq!(served_by(&mut client, ECHO), format!("127.0.0.2:{port}"));
    }
    drop((first, second));
}
