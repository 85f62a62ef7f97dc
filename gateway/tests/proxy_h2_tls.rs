//! HTTP/2 and TLS through the real `portico` and `fakeworker` binaries: h2c prior knowledge
//! from clients, TLS listeners negotiating h2 or HTTP/1.1 by ALPN with a certificate made in
//! the test, h2c towards workers, and HTTP/2 stream resets when a worker dies.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use support::{
    E1, End, Http1, ProxyConfig, TestWorker, assert_arrived_spread_out, chat_body, echo_header,
    get, is_done, sse_json,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

type Body = Full<Bytes>;

/// How long any one read of a response may take.
const READ: Duration = Duration::from_secs(5);

/// A response read to its end: head, body pieces with arrival times, and the error that
/// ended the body early, if one did.
struct Answer {
    status: StatusCode,
    version: Version,
    headers: http::HeaderMap,
    pieces: Vec<(Bytes, Instant)>,
    error: Option<String>,
}

impl Answer {
    fn body(&self) -> String {
        let bytes: Vec<u8> = self.pieces.iter().flat_map(|(b, _)| b.to_vec()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body()).unwrap_or_else(|e| panic!("{e}: {}", self.body()))
    }

    /// SSE events with the arrival time of the piece that completed each.
    fn events(&self) -> Vec<(String, Instant)> {
        let mut events = Vec::new();
        let mut pending = String::new();
        for (piece, at) in &self.pieces {
            pending.push_str(&String::from_utf8_lossy(piece));
            while let Some(end) = pending.find("\n\n") {
                events.push((pending[..end].to_owned(), *at));
                pending.drain(..end + 2);
            }
        }
        events
    }
}

/// Reads `response` to its end (each frame within [`READ`]).
async fn read(response: Response<Incoming>) -> Answer {
    let (parts, mut body) = response.into_parts();
    let mut answer = Answer {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        pieces: Vec::new(),
        error: None,
    };
    loop {
        match tokio::time::timeout(READ, body.frame()).await {
            Err(_) => panic!("no body frame within {READ:?}"),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                answer.error = Some(e.to_string());
                break;
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    answer.pieces.push((data, Instant::now()));
                }
            }
        }
    }
    answer
}

/// An HTTP/2 prior-knowledge (h2c) connection to `addr`.
async fn h2c(addr: SocketAddr) -> http2::SendRequest<Body> {
    let tcp = TcpStream::connect(addr).await.expect("connecting");
    tcp.set_nodelay(true).expect("nodelay");
    h2_over(tcp).await
}

/// An HTTP/2 connection over `io`.
async fn h2_over<T>(io: T) -> http2::SendRequest<Body>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    send
}

/// An HTTP/1.1 connection over `io`.
async fn h1_over<T>(io: T) -> http1::SendRequest<Body>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    send
}

/// The echo request every protocol variant sends: `POST <E1>/echo/proto?x=1` with a body.
fn echo_request(uri: String, host: Option<&str>) -> Request<Body> {
    let mut builder = Request::post(uri).header(header::CONTENT_TYPE, "text/plain");
    if let Some(host) = host {
        builder = builder.header(header::HOST, host);
    }
    builder
        .body(Full::new(Bytes::from_static(b"same body either way")))
        .expect("request")
}

/// What must be equal in a worker's echo whichever protocol the client spoke.
fn essentials(echo: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in ["method", "path", "query", "body", "body_bytes"] {
        out.insert(key.into(), echo[key].clone());
    }
    for name in [
        "host",
        "content-type",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
    ] {
        out.insert(name.into(), echo_header(echo, name).into());
    }
    Value::Object(out)
}

/// An h2c (prior knowledge) client gets the same `/echo` answer as an HTTP/1.1 client, over
/// HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_client_gets_the_same_echo_as_http1() {
    let worker = TestWorker::start(&[]);
    let gateway = ProxyConfig::new(&[worker.url()]).start();
    let addr = gateway.addr("public");
    let uri = format!("http://{addr}{E1}/echo/proto?x=1");

    let mut h2 = h2c(addr).await;
    let answer = read(
        h2.send_request(echo_request(uri.clone(), None))
            .await
            .expect("h2 request"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.version, Version::HTTP_2);
    assert!(answer.headers.contains_key("x-request-id"));
    let via_h2 = answer.json();

    let tcp = TcpStream::connect(addr).await.expect("connecting");
    let mut h1 = h1_over(tcp).await;
    let answer = read(
        h1.send_request(echo_request(
            format!("{E1}/echo/proto?x=1"),
            Some(&addr.to_string()),
        ))
        .await
        .expect("h1 request"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.version, Version::HTTP_11);
    let via_h1 = answer.json();

    assert_eq!(essentials(&via_h2), essentials(&via_h1));
    assert_eq!(via_h2["path"], "/echo/proto");
    assert_eq!(via_h2["query"], "x=1");
    assert_eq!(echo_header(&via_h2, "host"), [worker.addr().to_string()]);
    assert_eq!(echo_header(&via_h2, "x-forwarded-proto"), ["http"]);
    assert_eq!(echo_header(&via_h2, "x-forwarded-host"), [addr.to_string()]);
}

/// Over h2c, SSE events still arrive one by one as the worker sends them, and several
/// streams share one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_client_streams_sse_event_by_event() {
    let worker = TestWorker::start(&[]);
    let gateway = ProxyConfig::new(&[worker.url()]).start();
    let addr = gateway.addr("public");
    let h2 = h2c(addr).await;
    let streams: Vec<_> = (0..3)
        .map(|_| {
            let mut h2 = h2.clone();
            let request = Request::get(format!("http://{addr}{E1}/sse?events=5&interval_ms=150"))
                .body(Body::default())
                .expect("request");
            tokio::spawn(async move { read(h2.send_request(request).await.expect("h2")).await })
        })
        .collect();
    for stream in streams {
        let answer = stream.await.expect("stream task");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.error, None);
        let events = answer.events();
        assert_eq!(events.len(), 5, "{events:?}");
        let sent: Vec<u64> = events
            .iter()
            .map(|(e, _)| {
                sse_json(e).expect("data")["sent_at_us"]
                    .as_u64()
                    .expect("stamp")
            })
            .collect();
        let arrivals: Vec<Instant> = events.iter().map(|(_, at)| *at).collect();
        assert_arrived_spread_out(&arrivals, &sent);
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1: (certificate DER, cert PEM,
/// key PEM).
fn test_certificate() -> (CertificateDer<'static>, String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("generating a certificate");
    (
        certified.cert.der().clone(),
        certified.cert.pem(),
        certified.signing_key.serialize_pem(),
    )
}

/// A TLS connection to `addr` as `localhost`, trusting only `cert`, offering `alpn`.
async fn tls(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert.clone())
        .expect("trusting the test certificate");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("connecting");
    tcp.set_nodelay(true).expect("nodelay");
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

/// A TLS listener negotiates HTTP/2 when the client offers `h2` and HTTP/1.1 when it offers
/// `http/1.1` (or nothing); every way reaches the worker, which sees
/// `X-Forwarded-Proto: https`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_negotiates_h2_and_http1_by_alpn() {
    let worker = TestWorker::start(&[]);
    let (der, cert_pem, key_pem) = test_certificate();
    let gateway = support::TestGateway::start_with_files(
        &ProxyConfig::new(&[worker.url()]).tls().toml(),
        &[
            ("cert.pem", cert_pem.as_bytes()),
            ("key.pem", key_pem.as_bytes()),
        ],
    );
    let addr = gateway.addr("public");
    let authority = format!("localhost:{}", addr.port());
    let uri = format!("https://{authority}{E1}/echo/proto?x=1");
    let check = |echo: &Value| {
        assert_eq!(echo["path"], "/echo/proto");
        assert_eq!(echo["query"], "x=1");
        assert_eq!(echo["body"], "same body either way");
        assert_eq!(echo_header(echo, "host"), [worker.addr().to_string()]);
        assert_eq!(echo_header(echo, "x-forwarded-proto"), ["https"]);
        assert_eq!(echo_header(echo, "x-forwarded-host"), [authority.as_str()]);
        assert_eq!(
            echo_header(echo, "forwarded"),
            [format!(r#"for=127.0.0.1;proto=https;host="{authority}""#)]
        );
    };

    let stream = tls(addr, &der, &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h2 = h2_over(stream).await;
    let answer = read(
        h2.send_request(echo_request(uri.clone(), None))
            .await
            .expect("h2 request"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.version, Version::HTTP_2);
    check(&answer.json());

    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let stream = tls(addr, &der, alpn).await;
        let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        if alpn.is_empty() {
            assert_eq!(negotiated, None);
        } else {
            assert_eq!(negotiated.as_deref(), Some(&b"http/1.1"[..]));
        }
        let mut h1 = h1_over(stream).await;
        let answer = read(
            h1.send_request(echo_request(
                format!("{E1}/echo/proto?x=1"),
                Some(&authority),
            ))
            .await
            .expect("h1 request"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "ALPN {alpn:?}");
        assert_eq!(answer.version, Version::HTTP_11);
        check(&answer.json());
    }

    // Plain HTTP on the TLS port is not served.
    let mut conn = Http1::connect(addr);
    conn.set_timeout(Duration::from_secs(3));
    let _ = conn.write(format!("GET {E1}/echo HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let (rest, _) = conn.rest();
    assert!(
        !String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 2"),
        "plaintext HTTP served on a TLS listener"
    );
    assert_eq!(worker.count("/echo/proto"), 3);
}

/// With `protocol = "h2c"` the gateway talks HTTP/2 to the worker (the worker records
/// `HTTP/2.0`), whatever the client speaks, and streams still flow event by event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_towards_the_worker() {
    let worker = TestWorker::start(&[]);
    let gateway = ProxyConfig::new(&[worker.url()]).protocol("h2c").start();
    let addr = gateway.addr("public");

    let (status, _, body) = get(addr, &format!("{E1}/echo/h2c?x=1"));
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).expect("echo JSON");
    assert_eq!(echo["path"], "/echo/h2c");
    assert_eq!(echo["query"], "x=1");
    let recorded = worker.requests();
    let request = recorded
        .iter()
        .find(|r| r["path"] == "/echo/h2c?x=1")
        .expect("the echo request was recorded");
    assert_eq!(request["version"], "HTTP/2.0");

    let mut h2 = h2c(addr).await;
    let answer = read(
        h2.send_request(echo_request(format!("http://{addr}{E1}/echo/both"), None))
            .await
            .expect("h2 request"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["body"], "same body either way");

    let mut conn = Http1::connect(addr);
    conn.send(
        format!("GET {E1}/sse?events=5&interval_ms=150 HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    );
    assert_eq!(conn.status, 200);
    let events = conn.events();
    assert_eq!(conn.end, Some(End::Clean));
    assert_eq!(events.len(), 5);
    let sent: Vec<u64> = events
        .iter()
        .map(|(e, _)| {
            sse_json(e).expect("data")["sent_at_us"]
                .as_u64()
                .expect("stamp")
        })
        .collect();
    let arrivals: Vec<Instant> = events.iter().map(|(_, at)| *at).collect();
    assert_arrived_spread_out(&arrivals, &sent);
    assert!(
        worker
            .requests()
            .iter()
            .filter(|r| !support::is_probe_or_scrape(r["path"].as_str().unwrap_or("")))
            .all(|r| r["version"] == "HTTP/2.0"),
        "some request reached the worker over HTTP/1.1"
    );
}

/// When the worker dies in the middle of a stream, an HTTP/2 client sees the stream reset
/// (an error), never a clean end, and no `[DONE]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_sees_a_reset_when_the_worker_dies() {
    let mut worker = TestWorker::start(&["--tokens-per-second", "20"]);
    let gateway = ProxyConfig::new(&[worker.url()])
        .timeouts(500, 2, 10)
        .start();
    let addr = gateway.addr("public");
    let mut h2 = h2c(addr).await;
    let request = Request::post(format!("http://{addr}{E1}/v1/chat/completions"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(chat_body(100, true))))
        .expect("request");
    let response = h2.send_request(request).await.expect("h2 request");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut seen = String::new();
    while seen.matches("\n\n").count() < 3 {
        let frame = tokio::time::timeout(READ, body.frame())
            .await
            .expect("an event before the kill")
            .expect("the stream goes on")
            .expect("no error before the kill");
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    worker.kill();
    let ended = loop {
        match tokio::time::timeout(READ, body.frame()).await {
            Err(_) => panic!("the stream neither ended nor failed within {READ:?}"),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(e.to_string()),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    seen.push_str(&String::from_utf8_lossy(&data));
                }
            }
        }
    };
    assert!(
        ended.is_err(),
        "the HTTP/2 stream ended cleanly after the worker died"
    );
    assert!(
        !seen.split("\n\n").any(is_done),
        "a fake [DONE] after the worker died"
    );
}

/// A TLS handshake with `addr` as `localhost` trusting only `cert`: whether it succeeded.
async fn handshake_trusting(addr: SocketAddr, cert: &CertificateDer<'static>) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert.clone())
        .expect("trusting the test certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connecting");
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .is_ok()
}

/// A gateway whose listener serves `cert` and `key` (PEM) from `cert.pem` and `key.pem`,
/// the config watcher checking every `watch_seconds` (0: off). Returned once the daemon has
/// loaded its certificate (it prints its ports before), so that the files may change.
fn tls_gateway(
    worker: &TestWorker,
    watch_seconds: u64,
    cert: &str,
    key: &str,
) -> support::TestGateway {
    let config = ProxyConfig::new(&[worker.url()]).tls().toml().replace(
        "[server]\n",
        &format!("[server]\nconfig_watch_seconds = {watch_seconds}\n"),
    );
    let gateway = support::TestGateway::start_with_files(
        &config,
        &[("cert.pem", cert.as_bytes()), ("key.pem", key.as_bytes())],
    );
    support::eventually("`portico started`", READ, || {
        gateway
            .stderr()
            .iter()
            .any(|line| line.contains("portico started"))
            .then_some(())
    });
    gateway
}

/// Waits (up to 15 s) until the gateway's listener serves the certificate `cert`.
async fn until_served(gateway: &support::TestGateway, cert: &CertificateDer<'static>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !handshake_trusting(gateway.addr("public"), cert).await {
        assert!(
            Instant::now() < deadline,
            "the certificate was never served: {:?}",
            gateway.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGHUP replaces a TLS listener's certificate: new handshakes get the new one, a
/// connection opened before keeps working, and a reload whose key does not match its
/// certificate changes nothing (the daemon keeps serving the certificate it had).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_replaces_the_certificate() {
    let worker = TestWorker::start(&[]);
    let (old_der, old_cert, old_key) = test_certificate();
    // Only SIGHUP reloads here: the watcher is off.
    let gateway = tls_gateway(&worker, 0, &old_cert, &old_key);
    let addr = gateway.addr("public");
    assert!(handshake_trusting(addr, &old_der).await);
    let mut before = h1_over(tls(addr, &old_der, &[b"http/1.1"]).await).await;

    let (new_der, new_cert, new_key) = test_certificate();
    std::fs::write(gateway.dir().join("cert.pem"), &new_cert).expect("new certificate");
    std::fs::write(gateway.dir().join("key.pem"), &new_key).expect("new key");
    gateway.signal("HUP");
    until_served(&gateway, &new_der).await;
    assert!(
        !handshake_trusting(addr, &old_der).await,
        "the old certificate is still served after the reload"
    );
    // The connection made before the reload is untouched.
    let answer = read(
        before
            .send_request(echo_request(format!("{E1}/echo/before"), None))
            .await
            .expect("request on the old connection"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);

    // A certificate whose key does not match: the reload fails whole.
    let (_, third_cert, _) = test_certificate();
    std::fs::write(gateway.dir().join("cert.pem"), &third_cert).expect("third certificate");
    gateway.signal("HUP");
    support::eventually("the failed reload is logged", READ, || {
        gateway
            .stderr()
            .iter()
            .any(|line| line.contains("reload failed"))
            .then_some(())
    });
    assert!(
        handshake_trusting(addr, &new_der).await,
        "a failed reload changed the certificate"
    );
}

/// The watcher loads renewed certificate files without a signal: new handshakes get the new
/// certificate once both files have settled, and a certificate whose key does not match is
/// refused once, the listener keeping the certificate it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificate_files_are_loaded_without_a_signal() {
    let worker = TestWorker::start(&[]);
    let (old_der, old_cert, old_key) = test_certificate();
    let gateway = tls_gateway(&worker, 1, &old_cert, &old_key);
    let addr = gateway.addr("public");
    assert!(handshake_trusting(addr, &old_der).await);
    let logged = |what: &str| {
        gateway
            .stderr()
            .iter()
            .filter(|line| line.contains(what))
            .count()
    };

    let (new_der, new_cert, new_key) = test_certificate();
    std::fs::write(gateway.dir().join("cert.pem"), &new_cert).expect("new certificate");
    std::fs::write(gateway.dir().join("key.pem"), &new_key).expect("new key");
    until_served(&gateway, &new_der).await;
    assert!(!handshake_trusting(addr, &old_der).await);
    support::eventually("the load is logged", READ, || {
        (logged("new certificate files loaded") == 1).then_some(())
    });

    let (_, third_cert, _) = test_certificate();
    std::fs::write(gateway.dir().join("cert.pem"), &third_cert).expect("third certificate");
    support::eventually("the refused certificate is logged", READ, || {
        (logged("certificate reload failed") == 1).then_some(())
    });
    assert!(
        handshake_trusting(addr, &new_der).await,
        "a refused certificate replaced the one served"
    );
    // Nothing about the config changed: no config reload happened.
    assert_eq!(
        logged("configuration reloaded"),
        0,
        "{:?}",
        gateway.stderr()
    );
}

/// A config change refused because its listener's certificate pair was half-renewed (the
/// new certificate, the old key) is tried again once the pair settles: the watcher then
/// loads the pair and applies the change, with no further edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_refused_for_a_half_renewed_pair_applies_once_the_pair_settles() {
    let worker = TestWorker::start(&[]);
    let (_, old_cert, old_key) = test_certificate();
    let gateway = tls_gateway(&worker, 1, &old_cert, &old_key);
    let addr = gateway.addr("public");
    let failures = || {
        gateway
            .stderr()
            .iter()
            .filter(|line| line.contains("reload failed"))
            .count()
    };

    // A second endpoint, and the certificate renewed without its key yet.
    let config = std::fs::read_to_string(gateway.dir().join("config.toml")).expect("config");
    let with_e2 = format!(
        "{config}\n[[endpoint]]\nid = \"e2\"\nproject = \"p1\"\npublic = true\n\
         [endpoint.workers]\nurls = [\"{}\"]\n",
        worker.url()
    );
    let (new_der, new_cert, new_key) = test_certificate();
    std::fs::write(gateway.dir().join("config.toml"), with_e2).expect("config with e2");
    std::fs::write(gateway.dir().join("cert.pem"), &new_cert).expect("new certificate");
    support::eventually("the refused reloads", READ * 3, || {
        (failures() >= 2).then_some(())
    });

    std::fs::write(gateway.dir().join("key.pem"), &new_key).expect("new key");
    until_served(&gateway, &new_der).await;
    // The config is tried again at the checks after the pair loaded.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut client = h1_over(tls(addr, &new_der, &[b"http/1.1"]).await).await;
        let answer = read(
            client
                .send_request(echo_request("/project/p1/endpoint/e2/echo/x".into(), None))
                .await
                .expect("request to e2"),
        )
        .await;
        if answer.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "e2 never served: {:?}",
            gateway.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// HTTP/2 connections, h2c and TLS alike, are not closed by the HTTP/1.1 deadlines: idle
/// for longer than `keepalive_timeout_seconds` (and receiving hyper's pings' answers, which
/// would look like the start of a slow head), they still carry requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_outlive_the_keepalive_timeout() {
    let worker = TestWorker::start(&[]);
    let (der, cert_pem, key_pem) = test_certificate();
    let toml = ProxyConfig::new(&[worker.url()]).tls().toml().replacen(
        "[server]\n",
        "[server]\nkeepalive_timeout_seconds = 1\nheader_read_timeout_seconds = 1\n",
        1,
    );
    let tls_gateway = support::TestGateway::start_with_files(
        &toml,
        &[
            ("cert.pem", cert_pem.as_bytes()),
            ("key.pem", key_pem.as_bytes()),
        ],
    );
    let plain_gateway =
        support::TestGateway::start(&ProxyConfig::new(&[worker.url()]).toml().replacen(
            "[server]\n",
            "[server]\nkeepalive_timeout_seconds = 1\nheader_read_timeout_seconds = 1\n",
            1,
        ));
    let tls_addr = tls_gateway.addr("public");
    let plain_addr = plain_gateway.addr("public");
    let authority = format!("localhost:{}", tls_addr.port());
    let mut over_tls = h2_over(tls(tls_addr, &der, &[b"h2"]).await).await;
    let mut h2c = h2c(plain_addr).await;
    for round in 0..2 {
        let answer = read(
            over_tls
                .send_request(echo_request(
                    format!("https://{authority}{E1}/echo/tls"),
                    None,
                ))
                .await
                .unwrap_or_else(|e| panic!("TLS h2 request {round}: {e}")),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        let answer = read(
            h2c.send_request(echo_request(
                format!("http://{plain_addr}{E1}/echo/h2c"),
                None,
            ))
            .await
            .unwrap_or_else(|e| panic!("h2c request {round}: {e}")),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        if round == 0 {
            // Past the keep-alive deadline (1 s, swept every 250 ms) with nothing in flight.
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
    }
}
