//! Connections to workers: connecting with a deadline, and the per-thread pools that keep
//! them open between requests.

pub mod h1;
pub mod pool;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::metrics::UpstreamErrorKind;
use crate::worker::Worker;

/// Opens a TCP connection to `worker` within `timeout`, with Nagle off: SSE events and
/// small requests must not wait for a coalescing delay.
pub async fn connect(worker: &Worker, timeout: Duration) -> Result<TcpStream, UpstreamErrorKind> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(worker.connect_to())).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::debug!(worker = worker.label(), error = %err, "connect failed");
            return Err(UpstreamErrorKind::Connect);
        }
        Err(_) => return Err(UpstreamErrorKind::ConnectTimeout),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// `GET path` from `worker` over a fresh connection, for the control loops (health probes,
/// metric scrapes); `None` on any failure. The caller bounds the whole exchange in time.
pub async fn control_get(
    worker: &Worker,
    path: &str,
    agent: &'static str,
    connect_timeout: Duration,
) -> Option<Response<Incoming>> {
    let stream = connect(worker, connect_timeout).await.ok()?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(header::HOST, worker.authority().as_str())
        .header(header::USER_AGENT, agent)
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .ok()?;
    sender.send_request(request).await.ok()
}
