//! Who may call what, through the real `portico` binary over loopback: security groups on
//! the client address (IPv4, IPv6, IPv4-mapped) and the listener port, the client address from
//! `X-Forwarded-For` and PROXY protocol v1/v2 (sent by the test and by a real HAProxy), project
//! tokens (every 401, WebSocket upgrades), routing before access checks, the admin token, hot
//! reload on `SIGHUP`, and `portico validate` on a mismatched TLS pair.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use socket2::{Domain, Protocol, Socket, Type};
use support::{
    Http1, TestGateway, TestWorker, assert_json_error, echo_header, eventually, metric, portico,
};

/// 127.0.0.1: the test's usual source, and the trusted proxy where there is one.
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// 127.0.0.2: the source security groups admit.
const SECOND: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// 127.0.0.3: a source no group admits.
const THIRD: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// ::1.
const V6_LOCAL: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// The longest a read may take before the test fails.
const READ: Duration = Duration::from_secs(5);
/// How long a reload may take to apply.
const RELOAD: Duration = Duration::from_secs(10);

/// The one 403 body a denied source gets.
fn denied_body() -> Value {
    json!({"error": {
        "message": "access denied",
        "type": "permission_error",
        "code": "denied_by_security_group",
    }})
}

// ------------------------------------------------------------------------------------------
// Config pieces.
// ------------------------------------------------------------------------------------------

/// A config: `[server]` (admin listener on port 0, `server` keys added), then `rest`.
fn config(server: &str, rest: &[String]) -> String {
    format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\ngrace_period_seconds = 1\n{server}\n{}",
        rest.concat()
    )
}

/// A `[[listener]]` with extra `keys`.
fn listener(name: &str, address: &str, keys: &str) -> String {
    format!("\n[[listener]]\nname = \"{name}\"\naddress = \"{address}\"\n{keys}\n")
}

/// Project `p` accepting `tokens` (name, token), stored as SHA-256 as the config wants.
fn project(tokens: &[(&str, &str)]) -> String {
    let tokens: Vec<String> = tokens
        .iter()
        .map(|(name, token)| {
            format!(
                "{{ name = \"{name}\", sha256 = \"{}\" }}",
                gateway::token::sha256_hex(token)
            )
        })
        .collect();
    format!(
        "\n[[project]]\nid = \"p\"\ntokens = [{}]\n",
        tokens.join(", ")
    )
}

/// A `[[security_group]]` with inbound `rules` (TOML inline tables).
fn group(id: &str, rules: &[&str]) -> String {
    format!(
        "\n[[security_group]]\nid = \"{id}\"\ninbound = [{}]\n",
        rules.join(", ")
    )
}

/// Endpoint `id` of project `p` on `worker`, with extra endpoint `keys`.
fn endpoint(id: &str, worker: &TestWorker, keys: &str) -> String {
    format!(
        "\n[[endpoint]]\nid = \"{id}\"\nproject = \"p\"\n{keys}\n\n[endpoint.workers]\n\
         kind = \"static\"\nurls = [\"{}\"]\n",
        worker.url()
    )
}

// ------------------------------------------------------------------------------------------
// Raw HTTP/1.1 from a chosen source address.
// ------------------------------------------------------------------------------------------

/// A raw `GET path` with `Connection: close`, `X-Request-Id: id` and `headers`.
fn request(path: &str, id: &str, headers: &[(&str, &str)]) -> String {
    let mut raw =
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-Request-Id: {id}\r\n");
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    raw
}

/// A TCP connection to `to` from address `from` (the kernel picks the port). Any 127.0.0.0/8
/// address is a local address on Linux, so clients at 127.0.0.2 and .3 need no set-up.
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))
        .expect("creating a socket");
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .unwrap_or_else(|e| panic!("binding a client socket to {from}: {e}"));
    socket
        .connect_timeout(&to.into(), READ)
        .unwrap_or_else(|e| panic!("connecting from {from} to {to}: {e}"));
    let stream = TcpStream::from(socket);
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(READ)).expect("read timeout");
    stream
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// The server closed it.
    Eof,
    /// The server reset it.
    Reset,
    /// Nothing came for [`READ`]: the server kept it open.
    Timeout,
}

/// Writes `bytes` and reads until the server closes the connection: what it sent, and how it
/// ended.
fn exchange(mut stream: TcpStream, bytes: &[u8]) -> (Vec<u8>, Ending) {
    // The server may close before reading everything; whatever it sent is still readable.
    let _ = stream.write_all(bytes);
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (received, Ending::Eof),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (received, Ending::Timeout);
            }
            Err(_) => return (received, Ending::Reset),
        }
    }
}

/// A whole HTTP response.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    /// The first value of header `name` (lower case).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as a gateway error (`{"error":{"message","type","code"}}`, JSON).
    fn error(&self) -> Value {
        assert_json_error(self.status, &self.headers, &self.body)
    }

    /// The body as JSON.
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("status {}: not JSON ({e}): {}", self.status, self.body))
    }
}

/// Parses one HTTP/1.1 response (fixed-length, chunked or closed-delimited body).
fn parse(raw: &[u8]) -> Option<Answer> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = &raw[head_end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let decoded = if chunked {
        let mut out = Vec::new();
        loop {
            let line_end = body.windows(2).position(|w| w == b"\r\n")?;
            let size_line = std::str::from_utf8(&body[..line_end]).ok()?;
            let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
            body = &body[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(body.get(..size)?);
            body = body.get(size + 2..)?;
        }
        out
    } else {
        body.to_vec()
    };
    Some(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&decoded).into_owned(),
    })
}

/// Sends `prefix` (a PROXY header, or nothing) and `request` from `from` to `to`; returns
/// the answer (panics when the server sends none).
fn send_from(from: IpAddr, to: SocketAddr, prefix: &[u8], request: &str) -> Answer {
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(request.as_bytes());
    let (raw, ending) = exchange(connect_from(from, to), &bytes);
    parse(&raw).unwrap_or_else(|| {
        panic!(
            "no HTTP answer from {to} to a connection from {from} ({ending:?}): {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// `GET path` from `from` to `to` with request id `id` and `headers`.
fn get_from(
    from: IpAddr,
    to: SocketAddr,
    path: &str,
    id: &str,
    headers: &[(&str, &str)],
) -> Answer {
    send_from(from, to, b"", &request(path, id, headers))
}

/// Sends `bytes` from `from` to `to` and asserts the server closes the connection without a
/// byte of answer.
fn assert_closed_without_answer(from: IpAddr, to: SocketAddr, bytes: &[u8], what: &str) {
    let (raw, ending) = exchange(connect_from(from, to), bytes);
    assert!(
        raw.is_empty(),
        "{what}: expected the connection closed without an answer, got {:?}",
        String::from_utf8_lossy(&raw)
    );
    assert_ne!(
        ending,
        Ending::Timeout,
        "{what}: the connection was left open for {READ:?} instead of being closed"
    );
}

// ------------------------------------------------------------------------------------------
// Assertions on answers, the access log and metrics.
// ------------------------------------------------------------------------------------------

/// A 403 with exactly the security-group error body and no token challenge.
fn assert_denied(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 403, "{what}: {answer:?}");
    answer.error();
    assert_eq!(answer.json(), denied_body(), "{what}");
    assert_eq!(answer.header("www-authenticate"), None, "{what}");
}

/// A 401 with a `Bearer` challenge and JSON error `code`.
fn assert_unauthorized(answer: &Answer, code: &str, what: &str) {
    assert_eq!(answer.status, 401, "{what}: {answer:?}");
    let challenge = answer.header("www-authenticate").unwrap_or_else(|| {
        panic!(
            "{what}: a 401 without WWW-Authenticate: {:?}",
            answer.headers
        )
    });
    assert!(
        challenge.starts_with("Bearer"),
        "{what}: challenge {challenge:?}"
    );
    assert_eq!(
        answer.error()["error"]["code"],
        code,
        "{what}: {}",
        answer.body
    );
}

/// A 200 from the worker's `/echo`; returns its JSON.
fn assert_echoed(answer: &Answer, what: &str) -> Value {
    assert_eq!(answer.status, 200, "{what}: {answer:?}");
    answer.json()
}

/// The access-log line of request `id`, after checking its status, client address and
/// error code.
fn assert_logged(
    gateway: &TestGateway,
    id: &str,
    status: u16,
    client_ip: IpAddr,
    error: Option<&str>,
) -> Value {
    let entry = gateway.access_entry(id);
    assert_eq!(entry["status"], status, "{id}: {entry}");
    assert_eq!(
        entry["client_ip"],
        client_ip.to_string(),
        "{id}: client_ip in {entry}"
    );
    match error {
        Some(code) => assert_eq!(entry["error"], code, "{id}: {entry}"),
        None => assert!(entry["error"].is_null(), "{id}: {entry}"),
    }
    entry
}

/// `portico_denied_total{endpoint, reason}` (0 when absent).
fn denied(gateway: &TestGateway, endpoint: &str, reason: &str) -> f64 {
    metric(
        &gateway.metrics(),
        "portico_denied_total",
        &[("endpoint", endpoint), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

/// Panics with a clear message when IPv6 loopback is unusable here.
fn require_ipv6_loopback() {
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        panic!(
            "this test needs IPv6 loopback (::1), which cannot be bound here ({e}); enable IPv6 \
             on `lo` (sysctl net.ipv6.conf.lo.disable_ipv6=0)"
        );
    }
}

/// A port on 127.0.0.1 held by a bound but never listening `SO_REUSEPORT` socket: nobody
/// else gets it while the socket lives, yet a listener that also sets `SO_REUSEPORT` (as
/// Portico's do) may bind it, and gets every connection.
fn reserve_port() -> (Socket, u16) {
    let socket =
        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("creating a socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.set_reuse_port(true).expect("SO_REUSEPORT");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("binding a port");
    let port = socket
        .local_addr()
        .expect("local address")
        .as_socket()
        .expect("an IP address")
        .port();
    (socket, port)
}

/// Whether process `pid` is running (not exited and waiting to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name in parentheses, which may hold spaces.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

// ------------------------------------------------------------------------------------------
// Security groups.
// ------------------------------------------------------------------------------------------

/// A group admitting only 127.0.0.2: that source gets the worker's answer, 127.0.0.3 and ::1
/// get the 403 JSON; each denial is counted in `portico_denied_total` and logged with its
/// client address, and no denied request reaches the worker.
#[test]
fn security_group_admits_only_its_sources() {
    require_ipv6_loopback();
    let worker = TestWorker::start(&[]);
    let gateway = TestGateway::start(&config(
        "metrics_public = true",
        &[
            listener("public", "127.0.0.1:0", ""),
            listener("v6", "[::1]:0", ""),
            project(&[]),
            group(
                "only-2",
                &[r#"{ protocol = "tcp", source = "127.0.0.2/32" }"#],
            ),
            endpoint(
                "e",
                &worker,
                "public = true\nsecurity_groups = [\"only-2\"]",
            ),
        ],
    ));
    let (v4, v6) = (gateway.addr("public"), gateway.addr("v6"));
    let path = |name: &str| format!("/project/p/endpoint/e/echo/{name}");

    let answer = get_from(SECOND, v4, &path("from-2"), "sg-2", &[]);
    assert_echoed(&answer, "from 127.0.0.2");
    assert_denied(
        &get_from(THIRD, v4, &path("from-3"), "sg-3", &[]),
        "from 127.0.0.3",
    );
    assert_denied(
        &get_from(V6_LOCAL, v6, &path("from-v6"), "sg-v6", &[]),
        "from ::1",
    );

    let entry = assert_logged(&gateway, "sg-2", 200, SECOND, None);
    assert_eq!(entry["endpoint"], "e");
    for (id, ip) in [("sg-3", THIRD), ("sg-v6", V6_LOCAL)] {
        let entry = assert_logged(&gateway, id, 403, ip, Some("denied_by_security_group"));
        assert!(entry["worker"].is_null(), "{id}: {entry}");
    }
    assert_eq!(denied(&gateway, "e", "security_group"), 2.0);
    assert_eq!(worker.paths(), ["/echo/from-2"]);
}

/// On a dual-stack `[::]:0` listener an IPv4 client arrives as `::ffff:127.0.0.1` and is
/// matched (and logged) as 127.0.0.1: a `127.0.0.1/32` rule admits it, a group admitting
/// only 127.0.0.2 does not.
#[test]
fn ipv4_clients_of_a_dual_stack_listener_match_ipv4_rules() {
    require_ipv6_loopback();
    let worker = TestWorker::start(&[]);
    let gateway = TestGateway::start(&config(
        "metrics_public = true",
        &[
            listener("dual", "[::]:0", ""),
            project(&[]),
            group(
                "local",
                &[r#"{ protocol = "tcp", source = "127.0.0.1/32" }"#],
            ),
            group("only-2", &[r#"{ protocol = "tcp", source = "127.0.0.2" }"#]),
            endpoint(
                "open",
                &worker,
                "public = true\nsecurity_groups = [\"local\"]",
            ),
            endpoint(
                "closed",
                &worker,
                "public = true\nsecurity_groups = [\"only-2\"]",
            ),
        ],
    ));
    let dual = gateway.addr("dual");
    assert!(dual.is_ipv6(), "{dual}");
    let v4 = SocketAddr::new(LOCAL, dual.port());

    let answer = get_from(LOCAL, v4, "/project/p/endpoint/open/echo/v4", "dual-1", &[]);
    assert_echoed(&answer, "127.0.0.1 against 127.0.0.1/32");
    assert_denied(
        &get_from(
            LOCAL,
            v4,
            "/project/p/endpoint/closed/echo/v4",
            "dual-2",
            &[],
        ),
        "127.0.0.1 against a group admitting 127.0.0.2",
    );
    assert_logged(&gateway, "dual-1", 200, LOCAL, None);
    assert_logged(
        &gateway,
        "dual-2",
        403,
        LOCAL,
        Some("denied_by_security_group"),
    );
    assert_eq!(denied(&gateway, "closed", "security_group"), 1.0);
    assert_eq!(denied(&gateway, "open", "security_group"), 0.0);
    assert_eq!(worker.paths(), ["/echo/v4"]);
}

/// Rules match the port of the listener a request arrived on: `port_range`, `port` and
/// "no port" (all ports) rules, on an endpoint served on two listeners.
#[test]
fn rules_match_the_listener_port() {
    let worker = TestWorker::start(&[]);
    // Both ports are held until Portico has bound them, so nothing else can take them.
    let (hold_a, a) = reserve_port();
    let (hold_b, b) = reserve_port();
    // A range holding a but not b.
    let range_a = if a < b {
        [a.saturating_sub(10), a]
    } else {
        [a, a.saturating_add(10)]
    };
    let gateway = TestGateway::start(&config(
        "metrics_public = true",
        &[
            listener("a", &format!("127.0.0.1:{a}"), ""),
            listener("b", &format!("127.0.0.1:{b}"), ""),
            project(&[]),
            group(
                "range-a",
                &[&format!(
                    "{{ protocol = \"tcp\", port_range = [{}, {}], source = \"any\" }}",
                    range_a[0], range_a[1]
                )],
            ),
            group(
                "port-b",
                &[&format!(
                    "{{ protocol = \"tcp\", port = {b}, source = \"127.0.0.0/8\" }}"
                )],
            ),
            group(
                "all-ports",
                &[r#"{ protocol = "tcp", source = "127.0.0.1" }"#],
            ),
            endpoint(
                "ea",
                &worker,
                "public = true\nsecurity_groups = [\"range-a\"]",
            ),
            endpoint(
                "eb",
                &worker,
                "public = true\nsecurity_groups = [\"port-b\"]",
            ),
            endpoint(
                "both",
                &worker,
                "public = true\nsecurity_groups = [\"all-ports\"]",
            ),
        ],
    ));
    drop((hold_a, hold_b));
    assert_eq!(gateway.addr("a").port(), a);
    assert_eq!(gateway.addr("b").port(), b);

    let on = |listener: &str, endpoint: &str| {
        let id = format!("{endpoint}-on-{listener}");
        let path = format!("/project/p/endpoint/{endpoint}/echo/{id}");
        (get_from(LOCAL, gateway.addr(listener), &path, &id, &[]), id)
    };
    for (listener, endpoint, admitted) in [
        ("a", "ea", true),
        ("b", "ea", false),
        ("a", "eb", false),
        ("b", "eb", true),
        ("a", "both", true),
        ("b", "both", true),
    ] {
        let (answer, id) = on(listener, endpoint);
        if admitted {
            assert_echoed(&answer, &id);
        } else {
            assert_denied(&answer, &id);
            let entry = assert_logged(&gateway, &id, 403, LOCAL, Some("denied_by_security_group"));
            assert_eq!(entry["listener"], listener, "{entry}");
        }
    }
    assert_eq!(denied(&gateway, "ea", "security_group"), 1.0);
    assert_eq!(denied(&gateway, "eb", "security_group"), 1.0);
    assert_eq!(denied(&gateway, "both", "security_group"), 0.0);
    assert_eq!(
        worker.paths(),
        [
            "/echo/ea-on-a",
            "/echo/eb-on-b",
            "/echo/both-on-a",
            "/echo/both-on-b"
        ]
    );
}

// ------------------------------------------------------------------------------------------
// The client address: X-Forwarded-For and the PROXY protocol.
// ------------------------------------------------------------------------------------------

/// `X-Forwarded-For` from an untrusted peer is ignored (a spoofed header grants nothing);
/// from a trusted proxy the rightmost hop that is not a trusted proxy decides (all trusted:
/// the leftmost; an unreadable hop: the nearest trusted one), for the security group and the
/// access log's `client_ip`.
#[test]
fn x_forwarded_for_counts_only_from_trusted_proxies() {
    let worker = TestWorker::start(&[]);
    let gateway = TestGateway::start(&config(
        "metrics_public = true\ntrusted_proxies = [\"127.0.0.1/32\"]",
        &[
            listener("public", "127.0.0.1:0", ""),
            project(&[]),
            group(
                "only-2",
                &[r#"{ protocol = "tcp", source = "127.0.0.2/32" }"#],
            ),
            endpoint(
                "e",
                &worker,
                "public = true\nsecurity_groups = [\"only-2\"]",
            ),
        ],
    ));
    let public = gateway.addr("public");
    let cases: [(&str, IpAddr, Option<&str>, IpAddr); 8] = [
        // Untrusted peers: the header is ignored.
        ("spoof-2", THIRD, Some("127.0.0.2"), THIRD),
        ("spoof-list", THIRD, Some("127.0.0.2, 127.0.0.2"), THIRD),
        // From the trusted proxy.
        ("one-hop", LOCAL, Some("127.0.0.2"), SECOND),
        ("rightmost-3", LOCAL, Some("127.0.0.2, 127.0.0.3"), THIRD),
        ("rightmost-2", LOCAL, Some("127.0.0.3, 127.0.0.2"), SECOND),
        (
            "skip-trusted",
            LOCAL,
            Some("127.0.0.3, 127.0.0.2, 127.0.0.1"),
            SECOND,
        ),
        ("all-trusted", LOCAL, Some("127.0.0.1"), LOCAL),
        ("garbage", LOCAL, Some("127.0.0.2, not-an-address"), LOCAL),
    ];
    for (id, from, xff, client) in cases {
        let headers: Vec<(&str, &str)> = xff.map(|v| ("X-Forwarded-For", v)).into_iter().collect();
        let answer = get_from(
            from,
            public,
            &format!("/project/p/endpoint/e/echo/{id}"),
            id,
            &headers,
        );
        if client == SECOND {
            assert_echoed(&answer, id);
            assert_logged(&gateway, id, 200, client, None);
        } else {
            assert_denied(&answer, id);
            assert_logged(&gateway, id, 403, client, Some("denied_by_security_group"));
        }
    }
    // The trusted proxy without the header is the client itself.
    assert_denied(
        &get_from(
            LOCAL,
            public,
            "/project/p/endpoint/e/echo/none",
            "none",
            &[],
        ),
        "trusted peer without X-Forwarded-For",
    );
    assert_logged(
        &gateway,
        "none",
        403,
        LOCAL,
        Some("denied_by_security_group"),
    );
    assert_eq!(
        worker.paths(),
        ["/echo/one-hop", "/echo/rightmost-2", "/echo/skip-trusted"]
    );
    assert_eq!(denied(&gateway, "e", "security_group"), 6.0);
}

/// A PROXY protocol v2 header: `PROXY` command, TCP over the family of `source`.
fn proxy_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(0x21); // version 2, PROXY
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11); // AF_INET, STREAM
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            out.push(0x21); // AF_INET6, STREAM
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
        }
        _ => panic!("mixed address families: {source} {destination}"),
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

/// A PROXY protocol v2 `LOCAL` header (a health check: no addresses).
fn proxy_v2_local() -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    out
}

/// On a `proxy_protocol = true` listener, a v1 or v2 header from a trusted proxy names the
/// client (security groups and `client_ip` use it; a v2 `LOCAL` header means the peer
/// itself); an untrusted peer is closed on without an answer even with a valid header, and
/// so is a trusted peer that sends plain HTTP without a header.
#[test]
fn proxy_protocol_headers_name_the_client_only_from_trusted_proxies() {
    let worker = TestWorker::start(&[]);
    let gateway = TestGateway::start(&config(
        "metrics_public = true\ntrusted_proxies = [\"127.0.0.1/32\"]",
        &[
            listener("pp", "127.0.0.1:0", "proxy_protocol = true"),
            project(&[]),
            group(
                "only-2",
                &[r#"{ protocol = "tcp", source = "127.0.0.2/32" }"#],
            ),
            endpoint(
                "e",
                &worker,
                "public = true\nsecurity_groups = [\"only-2\"]",
            ),
        ],
    ));
    let pp = gateway.addr("pp");
    let port = pp.port();
    let path = |id: &str| format!("/project/p/endpoint/e/echo/{id}");
    let v1 = |source: &str| format!("PROXY TCP4 {source} 127.0.0.1 5555 {port}\r\n").into_bytes();

    // v1 and v2 from the trusted proxy.
    let answer = send_from(
        LOCAL,
        pp,
        &v1("127.0.0.2"),
        &request(&path("v1"), "v1", &[]),
    );
    assert_echoed(&answer, "v1 header naming 127.0.0.2");
    assert_logged(&gateway, "v1", 200, SECOND, None);

    let answer = send_from(
        LOCAL,
        pp,
        &v1("127.0.0.9"),
        &request(&path("v1-9"), "v1-9", &[]),
    );
    assert_denied(&answer, "v1 header naming 127.0.0.9");
    let nine: IpAddr = "127.0.0.9".parse().unwrap();
    assert_logged(
        &gateway,
        "v1-9",
        403,
        nine,
        Some("denied_by_security_group"),
    );

    let header = proxy_v2(SocketAddr::new(SECOND, 5555), pp);
    let answer = send_from(LOCAL, pp, &header, &request(&path("v2"), "v2", &[]));
    assert_echoed(&answer, "v2 header naming 127.0.0.2");
    assert_logged(&gateway, "v2", 200, SECOND, None);

    let v6_source: IpAddr = "2001:db8::7".parse().unwrap();
    let header = proxy_v2(
        SocketAddr::new(v6_source, 5555),
        SocketAddr::new(V6_LOCAL, port),
    );
    let answer = send_from(LOCAL, pp, &header, &request(&path("v2-v6"), "v2-v6", &[]));
    assert_denied(&answer, "v2 header naming 2001:db8::7");
    assert_logged(
        &gateway,
        "v2-v6",
        403,
        v6_source,
        Some("denied_by_security_group"),
    );

    let answer = send_from(
        LOCAL,
        pp,
        &proxy_v2_local(),
        &request(&path("local"), "local", &[]),
    );
    assert_denied(&answer, "v2 LOCAL header: the peer 127.0.0.1 itself");
    assert_logged(
        &gateway,
        "local",
        403,
        LOCAL,
        Some("denied_by_security_group"),
    );

    // A header from an untrusted peer is not believed; the connection is refused outright.
    let mut bytes = v1("127.0.0.2");
    bytes.extend_from_slice(request(&path("untrusted"), "untrusted", &[]).as_bytes());
    assert_closed_without_answer(THIRD, pp, &bytes, "v1 header from untrusted 127.0.0.3");
    let mut bytes = proxy_v2(SocketAddr::new(SECOND, 5555), pp);
    bytes.extend_from_slice(request(&path("untrusted-v2"), "untrusted-v2", &[]).as_bytes());
    assert_closed_without_answer(THIRD, pp, &bytes, "v2 header from untrusted 127.0.0.3");
    // The header is required.
    assert_closed_without_answer(
        LOCAL,
        pp,
        request(&path("no-header"), "no-header", &[]).as_bytes(),
        "plain HTTP without a PROXY header from the trusted proxy",
    );
    assert_closed_without_answer(
        LOCAL,
        pp,
        b"PROXY TCP4 banana 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\nHost: test\r\n\r\n",
        "a malformed v1 header from the trusted proxy",
    );

    assert_eq!(worker.paths(), ["/echo/v1", "/echo/v2"]);
    let logged: Vec<Value> = gateway.access_log();
    for id in ["untrusted", "untrusted-v2", "no-header"] {
        assert!(
            !logged.iter().any(|e| e["request_id"] == id),
            "{id} was served: {logged:?}"
        );
    }
}

/// The `haproxy` binary: on `PATH`, or where Debian puts it.
fn haproxy_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("haproxy"))
            .find(|candidate| candidate.is_file())
    });
    let debian = Path::new("/usr/sbin/haproxy");
    on_path
        .or_else(|| debian.is_file().then(|| debian.to_path_buf()))
        .unwrap_or_else(|| {
            panic!(
                "haproxy is needed as a real PROXY protocol v2 peer but is not installed: \
                 install the Debian package `haproxy` (scripts/test.sh does)"
            )
        })
}

/// A running HAProxy, killed on drop (also when the test panics).
struct Haproxy {
    child: Child,
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts HAProxy in TCP mode: a frontend on `127.0.0.1:<frontend>` forwarding to
    /// `backend` with a PROXY v2 header; waits until the frontend accepts connections.
    fn start(frontend: u16, backend: SocketAddr) -> Haproxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  log stdout format raw local0 err\n\
                 defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  \
                 timeout server 30s\n\
                 frontend f\n  bind 127.0.0.1:{frontend}\n  default_backend b\n\
                 backend b\n  server portico {backend} send-proxy-v2\n"
            ),
        )
        .expect("writing haproxy.cfg");
        let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("log file");
        let child = Command::new(haproxy_bin())
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("starting haproxy");
        let mut haproxy = Haproxy { child, dir };
        let addr = SocketAddr::from(([127, 0, 0, 1], frontend));
        eventually("haproxy to listen", Duration::from_secs(10), || {
            if let Ok(Some(status)) = haproxy.child.try_wait() {
                panic!("haproxy exited ({status}): {}", haproxy.log());
            }
            TcpStream::connect(addr).ok()
        });
        haproxy
    }

    /// What HAProxy wrote.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Through a real HAProxy (`send-proxy-v2`): Portico's TCP peer is HAProxy at 127.0.0.1 (a
/// trusted proxy), and the client address is the one HAProxy saw: a client bound to
/// 127.0.0.2 is admitted and logged as such, one at 127.0.0.3 is denied.
#[test]
fn haproxy_send_proxy_v2_names_the_client() {
    // Fails (never skips) when HAProxy is missing, before anything is started.
    haproxy_bin();
    let worker = TestWorker::start(&[]);
    let gateway = TestGateway::start(&config(
        "metrics_public = true\ntrusted_proxies = [\"127.0.0.1/32\"]",
        &[
            listener("pp", "127.0.0.1:0", "proxy_protocol = true"),
            project(&[]),
            group(
                "only-2",
                &[r#"{ protocol = "tcp", source = "127.0.0.2/32" }"#],
            ),
            endpoint(
                "e",
                &worker,
                "public = true\nsecurity_groups = [\"only-2\"]",
            ),
        ],
    ));
    let (hold, frontend) = reserve_port();
    // HAProxy may not set SO_REUSEPORT on every version: free the port first.
    drop(hold);
    let haproxy = Haproxy::start(frontend, gateway.addr("pp"));
    let front = SocketAddr::from(([127, 0, 0, 1], frontend));

    let answer = get_from(
        SECOND,
        front,
        "/project/p/endpoint/e/echo/ha-2",
        "ha-2",
        &[],
    );
    assert_eq!(
        answer.status,
        200,
        "{answer:?}; haproxy log: {}",
        haproxy.log()
    );
    let echo = answer.json();
    assert_eq!(echo["path"], "/echo/ha-2");
    assert_logged(&gateway, "ha-2", 200, SECOND, None);

    let answer = get_from(THIRD, front, "/project/p/endpoint/e/echo/ha-3", "ha-3", &[]);
    assert_denied(&answer, "127.0.0.3 through haproxy");
    assert_logged(
        &gateway,
        "ha-3",
        403,
        THIRD,
        Some("denied_by_security_group"),
    );
    assert_eq!(worker.paths(), ["/echo/ha-2"]);
}

// ------------------------------------------------------------------------------------------
// Project tokens.
// ------------------------------------------------------------------------------------------

/// A request the auth stage refuses: its request id, query string, `Authorization` header
/// values (one header each) and the error code it gets.
struct Refusal {
    id: &'static str,
    query: String,
    authorization: Vec<String>,
    code: &'static str,
}

impl Refusal {
    fn new(id: &'static str, query: &str, authorization: &[&str], code: &'static str) -> Refusal {
        Refusal {
            id,
            query: query.to_owned(),
            authorization: authorization.iter().map(|v| (*v).to_owned()).collect(),
            code,
        }
    }
}

/// Every way to lack a valid token is a 401 with a `Bearer` challenge and its own code
/// (tokens in the query string are never read), counted by reason; a valid token reaches the
/// worker without its `Authorization` header and names the caller in the access log and
/// `portico_caller_requests_total`; a public endpoint needs no token; no token is ever
/// written to the logs.
#[test]
fn project_tokens_guard_endpoints() {
    let ci = gateway::token::generate();
    let ops = gateway::token::generate();
    let unknown = gateway::token::generate();
    let worker = TestWorker::start(&[]);
    let gateway = TestGateway::start(&config(
        "metrics_public = true",
        &[
            listener("public", "127.0.0.1:0", ""),
            project(&[("ci", &ci), ("ops", &ops)]),
            endpoint("e", &worker, ""),
            endpoint("pub", &worker, "public = true"),
        ],
    ));
    let public = gateway.addr("public");
    let bearer = |token: &str| format!("Bearer {token}");
    let (bearer_ci, bearer_unknown) = (bearer(&ci), bearer(&unknown));
    let spaced = format!("Bearer {} {}", &ci[..10], &ci[10..]);
    let lower = format!("bearer {ops}");
    let basic = "Basic dXNlcjpwYXNz".to_owned();

    let none = String::new();
    let refused = [
        Refusal::new("none", &none, &[], "missing_token"),
        Refusal::new("empty", &none, &[""], "missing_token"),
        Refusal::new("basic", &none, &[&basic], "malformed_authorization"),
        Refusal::new("scheme-only", &none, &["Bearer"], "malformed_authorization"),
        Refusal::new("spaced", &none, &[&spaced], "malformed_authorization"),
        Refusal::new(
            "two-headers",
            &none,
            &[&bearer_ci, &bearer_ci],
            "malformed_authorization",
        ),
        Refusal::new("unknown", &none, &[&bearer_unknown], "invalid_token"),
        Refusal::new("query-token", &format!("?token={ci}"), &[], "missing_token"),
        Refusal::new(
            "query-api-key",
            &format!("?api_key={ci}"),
            &[],
            "missing_token",
        ),
        Refusal::new(
            "query-access-token",
            &format!("?access_token={ci}"),
            &[],
            "missing_token",
        ),
    ];
    for refusal in &refused {
        let Refusal { id, code, .. } = refusal;
        let path = format!("/project/p/endpoint/e/echo/{id}{}", refusal.query);
        let headers: Vec<(&str, &str)> = refusal
            .authorization
            .iter()
            .map(|value| ("Authorization", value.as_str()))
            .collect();
        let answer = get_from(LOCAL, public, &path, id, &headers);
        assert_unauthorized(&answer, code, id);
        let entry = assert_logged(&gateway, id, 401, LOCAL, Some(code));
        assert!(entry["caller"].is_null(), "{id}: {entry}");
    }

    let answer = get_from(
        LOCAL,
        public,
        "/project/p/endpoint/e/echo/ci",
        "ci",
        &[("Authorization", &bearer_ci)],
    );
    let echo = assert_echoed(&answer, "the ci token");
    assert_eq!(
        echo_header(&echo, "authorization"),
        Vec::<String>::new(),
        "the token reached the worker"
    );
    let answer = get_from(
        LOCAL,
        public,
        "/project/p/endpoint/e/echo/ops",
        "ops",
        &[("Authorization", &lower)],
    );
    assert_echoed(&answer, "the ops token, lower-case scheme");
    let answer = get_from(
        LOCAL,
        public,
        "/project/p/endpoint/pub/echo/public",
        "public",
        &[],
    );
    assert_echoed(&answer, "public endpoint without a token");

    assert_eq!(
        assert_logged(&gateway, "ci", 200, LOCAL, None)["caller"],
        "ci"
    );
    assert_eq!(
        assert_logged(&gateway, "ops", 200, LOCAL, None)["caller"],
        "ops"
    );
    assert!(assert_logged(&gateway, "public", 200, LOCAL, None)["caller"].is_null());

    let metrics = gateway.metrics();
    let count = |name: &str, labels: &[(&str, &str)]| metric(&metrics, name, labels).unwrap_or(0.0);
    // The metric's reason is the answer's error code, one count per refusal.
    for reason in ["missing_token", "malformed_authorization", "invalid_token"] {
        let expected = refused.iter().filter(|r| r.code == reason).count();
        assert!(expected > 0, "no refusal with {reason}");
        assert_eq!(
            count(
                "portico_denied_total",
                &[("endpoint", "e"), ("reason", reason)]
            ),
            expected as f64,
            "portico_denied_total{{reason={reason}}}"
        );
    }
    for caller in ["ci", "ops"] {
        assert_eq!(
            count(
                "portico_caller_requests_total",
                &[("endpoint", "e"), ("caller", caller)]
            ),
            1.0,
            "{caller}"
        );
    }

    // Only the authenticated requests and the public one reached the worker, none with a
    // token in any header or in the query.
    assert_eq!(worker.paths(), ["/echo/ci", "/echo/ops", "/echo/public"]);
    for recorded in worker.requests() {
        let text = recorded.to_string();
        assert!(
            !text.contains(&ci) && !text.contains(&ops),
            "a token reached the worker: {text}"
        );
    }
    // Nothing Portico wrote holds a token, valid or not.
    let written = [gateway.stdout(), gateway.stderr()].concat().join("\n");
    for token in [&ci, &ops, &unknown] {
        assert!(
            !written.contains(token.as_str()),
            "a token is in Portico's output:\n{written}"
        );
    }
}

/// A WebSocket upgrade with the token only in the query string (`token`, `api_key`) is
/// answered 401 before any worker sees it; with the `Authorization` header it is switched
/// (101) to the worker's `/ws`.
#[test]
fn websocket_upgrades_need_the_token_in_the_header() {
    let token = gateway::token::generate();
    let worker = TestWorker::start(&[]);
    let gateway = TestGateway::start(&config(
        "metrics_public = true",
        &[
            listener("public", "127.0.0.1:0", ""),
            project(&[("ws", &token)]),
            endpoint("e", &worker, ""),
        ],
    ));
    let public = gateway.addr("public");
    let upgrade = |query: &str, headers: &str| {
        format!(
            "GET /project/p/endpoint/e/ws{query} HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{headers}\r\n"
        )
    };
    for (query, headers, code) in [
        (format!("?token={token}"), String::new(), "missing_token"),
        (format!("?api_key={token}"), String::new(), "missing_token"),
        (
            String::new(),
            format!("Authorization: Bearer {}\r\n", gateway::token::generate()),
            "invalid_token",
        ),
    ] {
        let mut conn = Http1::connect(public);
        conn.write(upgrade(&query, &headers).as_bytes())
            .expect("writing the upgrade request");
        let status = conn.read_any_head();
        let body = conn.body();
        let answer = Answer {
            status,
            headers: conn.headers.clone(),
            body,
        };
        assert_unauthorized(
            &answer,
            code,
            &format!("upgrade with {query:?} {headers:?}"),
        );
    }
    assert_eq!(worker.count("/ws"), 0, "{:?}", worker.paths());

    let mut conn = Http1::connect(public);
    conn.write(upgrade("", &format!("Authorization: Bearer {token}\r\n")).as_bytes())
        .expect("writing the upgrade request");
    assert_eq!(conn.read_any_head(), 101, "headers {:?}", conn.headers);
    assert_eq!(
        conn.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{:?}",
        conn.headers
    );
    drop(conn);
    assert_eq!(worker.paths(), ["/ws"]);
    let recorded = worker.requests();
    assert!(
        !recorded.iter().any(|r| r.to_string().contains(&token)),
        "the token reached the worker: {recorded:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Pipeline order.
// ------------------------------------------------------------------------------------------

/// An endpoint asked for on a listener that does not serve it is the same 404
/// `endpoint_not_found` as an endpoint that does not exist, before any security group or
/// token check; on its own listener the security group answers before the token check.
#[test]
fn routing_comes_before_security_groups_and_tokens() {
    let worker = TestWorker::start(&[]);
    let gateway = TestGateway::start(&config(
        "metrics_public = true",
        &[
            listener("a", "127.0.0.1:0", ""),
            listener("b", "127.0.0.1:0", ""),
            project(&[("ci", &gateway::token::generate())]),
            group(
                "nobody",
                &[r#"{ protocol = "tcp", source = "192.0.2.1/32" }"#],
            ),
            group(
                "local",
                &[r#"{ protocol = "tcp", source = "127.0.0.1/32" }"#],
            ),
            endpoint("open", &worker, "public = true\nlisteners = [\"a\"]"),
            endpoint(
                "walled",
                &worker,
                "listeners = [\"a\"]\nsecurity_groups = [\"nobody\"]",
            ),
            endpoint(
                "tokened",
                &worker,
                "listeners = [\"a\"]\nsecurity_groups = [\"local\"]",
            ),
        ],
    ));
    let (a, b) = (gateway.addr("a"), gateway.addr("b"));

    let missing = get_from(LOCAL, b, "/project/p/endpoint/nope/echo", "nope", &[]);
    assert_eq!(missing.status, 404, "{missing:?}");
    let missing = missing.error();
    assert_eq!(missing["error"]["code"], "endpoint_not_found");
    for endpoint in ["open", "walled", "tokened"] {
        let id = format!("{endpoint}-on-b");
        let answer = get_from(
            LOCAL,
            b,
            &format!("/project/p/endpoint/{endpoint}/echo"),
            &id,
            &[],
        );
        assert_eq!(answer.status, 404, "{id}: {answer:?}");
        let error = answer.error();
        assert_eq!(error["error"]["code"], missing["error"]["code"], "{id}");
        assert_eq!(error["error"]["type"], missing["error"]["type"], "{id}");
        assert_logged(&gateway, &id, 404, LOCAL, Some("endpoint_not_found"));
    }

    let open = get_from(
        LOCAL,
        a,
        "/project/p/endpoint/open/echo/a",
        "open-on-a",
        &[],
    );
    assert_echoed(&open, "open on a");
    let walled = get_from(
        LOCAL,
        a,
        "/project/p/endpoint/walled/echo",
        "walled-on-a",
        &[],
    );
    assert_denied(
        &walled,
        "walled on a, without a token: the group answers first",
    );
    let tokened = get_from(
        LOCAL,
        a,
        "/project/p/endpoint/tokened/echo",
        "tokened-on-a",
        &[],
    );
    assert_unauthorized(
        &tokened,
        "missing_token",
        "tokened on a, admitted by its group",
    );

    assert_eq!(denied(&gateway, "walled", "security_group"), 1.0);
    assert_eq!(denied(&gateway, "walled", "missing_token"), 0.0);
    assert_eq!(denied(&gateway, "tokened", "missing_token"), 1.0);
    assert_eq!(worker.paths(), ["/echo/a"]);
}

// ------------------------------------------------------------------------------------------
// The admin API.
// ------------------------------------------------------------------------------------------

/// `GET path` on the admin listener with an optional admin `token`.
fn admin_get(gateway: &TestGateway, path: &str, token: Option<&str>) -> Answer {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|value| ("Authorization", value.as_str()))
        .collect();
    get_from(LOCAL, gateway.addr("admin"), path, "admin", &headers)
}

/// A 401 from the admin API: JSON, with a `Bearer` challenge.
fn assert_admin_refused(answer: &Answer, what: &str) -> String {
    assert_eq!(answer.status, 401, "{what}: {answer:?}");
    let challenge = answer.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{what}: {answer:?}");
    answer.error()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// With `server.admin_token_sha256`, `/metrics` (and the rest of the admin API) needs the
/// admin bearer token: 401 JSON with a challenge without it or with a wrong one, 200 with
/// it; `/healthz` stays open; `metrics_public = true` opens `/metrics` alone.
#[test]
fn admin_token_guards_the_admin_api() {
    let admin = gateway::token::generate();
    let base = |server: &str| {
        config(
            &format!(
                "admin_token_sha256 = \"{}\"\n{server}",
                gateway::token::sha256_hex(&admin)
            ),
            &[
                listener("public", "127.0.0.1:0", ""),
                project(&[]),
                // An endpoint, so that /metrics has samples to show.
                "\n[[endpoint]]\nid = \"e\"\nproject = \"p\"\n[endpoint.workers]\n\
                 kind = \"static\"\nurls = [\"http://127.0.0.1:9\"]\n"
                    .to_owned(),
            ],
        )
    };
    let closed = TestGateway::start(&base(""));
    let wrong = gateway::token::generate();
    // The same verdicts as for project tokens.
    let code = assert_admin_refused(&admin_get(&closed, "/metrics", None), "no token");
    assert_eq!(code, "missing_token");
    let code = assert_admin_refused(&admin_get(&closed, "/metrics", Some(&wrong)), "wrong token");
    assert_eq!(code, "invalid_token");
    let answer = get_from(
        LOCAL,
        closed.addr("admin"),
        "/metrics",
        "admin",
        &[("Authorization", "Basic dXNlcjpwYXNz")],
    );
    let code = assert_admin_refused(&answer, "Basic credentials");
    assert_eq!(code, "malformed_authorization");
    assert_admin_refused(
        &admin_get(&closed, "/admin/endpoints", None),
        "another admin path without a token",
    );
    let metrics = admin_get(&closed, "/metrics", Some(&admin));
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(
        metrics.body.contains("portico_denied_total"),
        "{}",
        metrics.body
    );
    let health = admin_get(&closed, "/healthz", None);
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json()["status"], "ok");

    let public_metrics = TestGateway::start(&base("metrics_public = true"));
    let metrics = admin_get(&public_metrics, "/metrics", None);
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(
        metrics.body.contains("portico_denied_total"),
        "{}",
        metrics.body
    );
    assert_admin_refused(
        &admin_get(&public_metrics, "/admin/endpoints", None),
        "metrics_public opens /metrics only",
    );

    for gateway in [&closed, &public_metrics] {
        let written = [gateway.stdout(), gateway.stderr()].concat().join("\n");
        assert!(!written.contains(&admin), "the admin token was logged");
    }
}

// ------------------------------------------------------------------------------------------
// Hot reload.
// ------------------------------------------------------------------------------------------

/// Waits until the daemon has set up its signal handlers (it logs `portico started` just
/// before; until then SIGHUP would end it).
fn wait_started(gateway: &TestGateway) {
    eventually(
        "the `portico started` log line",
        Duration::from_secs(10),
        || {
            gateway
                .stderr()
                .iter()
                .any(|line| line.contains("portico started"))
                .then_some(())
        },
    );
}

/// Writes `config` over the gateway's config file and sends SIGHUP.
fn reload(gateway: &TestGateway, config: &str) {
    std::fs::write(gateway.dir().join("config.toml"), config).expect("rewriting the config");
    gateway.signal("HUP");
}

/// SIGHUP re-reads the config file and applies it to the next request, on open connections
/// too: a new token works and the removed one stops, the security group flips 403/200,
/// trusted proxies and the admin token change; an invalid file changes nothing and the
/// daemon keeps serving.
#[test]
fn sighup_reloads_tokens_groups_proxies_and_the_admin_token() {
    let (old, new, third) = (
        gateway::token::generate(),
        gateway::token::generate(),
        gateway::token::generate(),
    );
    let (admin_old, admin_new) = (gateway::token::generate(), gateway::token::generate());
    let worker = TestWorker::start(&[]);
    // Only SIGHUP reloads here: the watcher is off.
    let version = |server: &str, token: (&str, &str), source: &str| {
        config(
            &format!("config_watch_seconds = 0\n{server}"),
            &[
                listener("public", "127.0.0.1:0", ""),
                project(&[token]),
                group(
                    "g",
                    &[&format!("{{ protocol = \"tcp\", source = \"{source}\" }}")],
                ),
                endpoint("e", &worker, "security_groups = [\"g\"]"),
            ],
        )
    };
    let first = version(
        &format!(
            "admin_token_sha256 = \"{}\"",
            gateway::token::sha256_hex(&admin_old)
        ),
        ("old", &old),
        "127.0.0.1/32",
    );
    let mut gateway = TestGateway::start(&first);
    let public = gateway.addr("public");
    let path = "/project/p/endpoint/e/echo";
    let with = |token: &str| format!("Bearer {token}");
    let (with_old, with_new) = (with(&old), with(&new));

    // Before: old token from 127.0.0.1.
    let answer = get_from(
        LOCAL,
        public,
        path,
        "before-old",
        &[("Authorization", &with_old)],
    );
    assert_echoed(&answer, "old token before the reload");
    let answer = get_from(
        LOCAL,
        public,
        path,
        "before-new",
        &[("Authorization", &with_new)],
    );
    assert_unauthorized(&answer, "invalid_token", "new token before the reload");
    assert_denied(
        &get_from(
            SECOND,
            public,
            path,
            "before-2",
            &[("Authorization", &with_old)],
        ),
        "127.0.0.2 before the reload",
    );
    // A keep-alive connection opened before the reload.
    let mut kept = Http1::connect(public);
    let keep_alive = |token: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\r\n")
    };
    kept.send(keep_alive(&old).as_bytes());
    assert_eq!(kept.status, 200);
    kept.body();

    // After: only the new token, only 127.0.0.2, 127.0.0.1 trusted, a new admin token.
    let second = version(
        &format!(
            "admin_token_sha256 = \"{}\"\ntrusted_proxies = [\"127.0.0.1/32\"]",
            gateway::token::sha256_hex(&admin_new)
        ),
        ("new", &new),
        "127.0.0.2/32",
    );
    wait_started(&gateway);
    reload(&gateway, &second);
    eventually("the reloaded config to apply", RELOAD, || {
        assert!(
            alive(gateway.pid()),
            "SIGHUP ended portico: {:?}",
            gateway.stderr()
        );
        let answer = get_from(
            SECOND,
            public,
            path,
            "probe",
            &[("Authorization", &with_new)],
        );
        (answer.status == 200).then_some(())
    });
    let answer = get_from(
        SECOND,
        public,
        path,
        "after-new",
        &[("Authorization", &with_new)],
    );
    assert_eq!(
        assert_logged(&gateway, "after-new", 200, SECOND, None)["caller"],
        "new"
    );
    assert_echoed(&answer, "new token after the reload");
    let answer = get_from(
        SECOND,
        public,
        path,
        "after-old",
        &[("Authorization", &with_old)],
    );
    assert_unauthorized(&answer, "invalid_token", "removed token after the reload");
    assert_denied(
        &get_from(
            LOCAL,
            public,
            path,
            "after-1",
            &[("Authorization", &with_new)],
        ),
        "127.0.0.1 after the group changed",
    );
    // 127.0.0.1 is now a trusted proxy: its X-Forwarded-For names the client.
    let answer = get_from(
        LOCAL,
        public,
        path,
        "after-xff",
        &[
            ("Authorization", &with_new),
            ("X-Forwarded-For", "127.0.0.2"),
        ],
    );
    assert_echoed(&answer, "X-Forwarded-For from the newly trusted proxy");
    assert_logged(&gateway, "after-xff", 200, SECOND, None);
    // The open connection stays open and follows the new policy.
    kept.send(keep_alive(&new).as_bytes());
    assert_eq!(
        kept.status, 403,
        "the kept-alive connection after the reload"
    );
    kept.body();
    assert_admin_refused(
        &admin_get(&gateway, "/metrics", Some(&admin_old)),
        "the old admin token",
    );
    assert_eq!(
        admin_get(&gateway, "/metrics", Some(&admin_new)).status,
        200
    );

    // An invalid file: reported, nothing applied, still serving.
    let failures = |gateway: &TestGateway| {
        gateway
            .stderr()
            .iter()
            .filter(|line| line.contains("reload failed"))
            .count()
    };
    assert_eq!(failures(&gateway), 0, "{:?}", gateway.stderr());
    let broken = version("", ("third", &third), "not-an-address")
        .replace("[server]", "[server]\nno_such_key = true");
    let config_path = gateway.dir().join("config.toml");
    std::fs::write(&config_path, &broken).expect("rewriting the config");
    let check = portico(&["validate", "--config", config_path.to_str().unwrap()]);
    assert!(!check.status.success(), "the broken config validates");
    gateway.signal("HUP");
    eventually("the failed reload to be reported", RELOAD, || {
        (failures(&gateway) == 1).then_some(())
    });
    assert!(alive(gateway.pid()), "{:?}", gateway.stderr());
    let answer = get_from(
        SECOND,
        public,
        path,
        "kept-new",
        &[("Authorization", &with_new)],
    );
    assert_echoed(&answer, "the token in force after a failed reload");
    let third_bearer = with(&third);
    let answer = get_from(
        SECOND,
        public,
        path,
        "not-third",
        &[("Authorization", &third_bearer)],
    );
    assert_unauthorized(
        &answer,
        "invalid_token",
        "a token only the invalid file has",
    );
    assert_eq!(
        admin_get(&gateway, "/metrics", Some(&admin_new)).status,
        200,
        "the admin token in force after a failed reload"
    );

    let written = [gateway.stdout(), gateway.stderr()].concat().join("\n");
    for token in [&old, &new, &third, &admin_old, &admin_new] {
        assert!(!written.contains(token.as_str()), "a token was logged");
    }
    gateway.signal("TERM");
    assert_eq!(gateway.wait_exit(Duration::from_secs(10)), Some(0));
}

// ------------------------------------------------------------------------------------------
// portico validate.
// ------------------------------------------------------------------------------------------

/// `portico validate` refuses a listener whose certificate and key do not belong together,
/// naming `listener[<name>].tls`; the matching pair validates.
#[test]
fn validate_refuses_a_mismatched_tls_pair() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tls");
    let dir = tempfile::tempdir().expect("temp dir");
    for file in ["cert.pem", "key.pem", "other-key.pem"] {
        std::fs::copy(fixtures.join(file), dir.path().join(file))
            .unwrap_or_else(|e| panic!("copying {file}: {e}"));
    }
    let write = |key: &str| {
        let path = dir.path().join(format!("with-{key}.toml"));
        let text = config(
            "",
            &[listener(
                "secure",
                "127.0.0.1:0",
                &format!("tls = {{ cert = \"cert.pem\", key = \"{key}\" }}"),
            )],
        );
        std::fs::write(&path, text).expect("writing the config");
        path
    };

    let mismatched = write("other-key.pem");
    let out = portico(&["validate", "--config", mismatched.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "validate accepted a mismatched pair: {stderr}"
    );
    assert!(
        stderr.contains("listener[secure].tls"),
        "the problem does not name listener[secure].tls: {stderr}"
    );

    let matching = write("key.pem");
    let out = portico(&["validate", "--config", matching.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "the matching pair was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cors_origins` lets a page on a listed origin call a token-guarded endpoint: Portico
/// answers the preflight before auth (nothing reaches the worker), and marks every answer
/// to that origin, its own 401 included, so the page can read it. Other origins and
/// endpoints without `cors_origins` get no CORS headers from Portico.
#[test]
fn cors_origins_let_a_browser_page_call_an_endpoint() {
    let ci = gateway::token::generate();
    let worker = TestWorker::start(&[]);
    let gateway = TestGateway::start(&config(
        "",
        &[
            listener("public", "127.0.0.1:0", ""),
            project(&[("ci", &ci)]),
            endpoint(
                "e",
                &worker,
                r#"cors_origins = ["http://console.test:9090"]"#,
            ),
            endpoint("plain", &worker, ""),
        ],
    ));
    let public = gateway.addr("public");
    let origin = "http://console.test:9090";
    let preflight = |path: &str, origin: &str| {
        send_from(
            LOCAL,
            public,
            b"",
            &format!(
                "OPTIONS {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nOrigin: {origin}\r\n\
                 Access-Control-Request-Method: POST\r\n\
                 Access-Control-Request-Headers: authorization, content-type\r\n\r\n"
            ),
        )
    };

    let answer = preflight("/project/p/endpoint/e/v1/chat/completions", origin);
    assert_eq!(answer.status, 204, "{answer:?}");
    assert_eq!(answer.header("access-control-allow-origin"), Some(origin));
    assert_eq!(
        answer.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert!(
        answer
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST")),
        "{answer:?}"
    );
    assert_eq!(
        worker.count("/v1/chat"),
        0,
        "the preflight reached the worker"
    );

    let refused = get_from(
        LOCAL,
        public,
        "/project/p/endpoint/e/echo/no-token",
        "no-token",
        &[("Origin", origin)],
    );
    assert_unauthorized(&refused, "missing_token", "no token from the page");
    assert_eq!(refused.header("access-control-allow-origin"), Some(origin));

    let bearer = format!("Bearer {ci}");
    let answered = get_from(
        LOCAL,
        public,
        "/project/p/endpoint/e/echo/page",
        "page",
        &[("Origin", origin), ("Authorization", &bearer)],
    );
    assert_echoed(&answered, "the page's call");
    assert_eq!(answered.header("access-control-allow-origin"), Some(origin));
    assert!(
        answered
            .header("access-control-expose-headers")
            .is_some_and(|h| h.contains("x-request-id")),
        "{answered:?}"
    );
    assert_eq!(answered.header("vary"), Some("origin"));

    let other = get_from(
        LOCAL,
        public,
        "/project/p/endpoint/e/echo/other",
        "other",
        &[
            ("Origin", "http://elsewhere.test"),
            ("Authorization", &bearer),
        ],
    );
    assert_echoed(&other, "another origin");
    assert_eq!(other.header("access-control-allow-origin"), None);
    let answer = preflight("/project/p/endpoint/e/x", "http://elsewhere.test");
    assert_unauthorized(&answer, "missing_token", "a preflight from another origin");

    // Without `cors_origins` a preflight is an ordinary request: here, one without a token.
    let answer = preflight("/project/p/endpoint/plain/x", origin);
    assert_unauthorized(
        &answer,
        "missing_token",
        "a preflight to an endpoint without CORS",
    );
    assert_eq!(answer.header("access-control-allow-origin"), None);
}
