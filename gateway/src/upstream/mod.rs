//! Connections to workers: connecting with a deadline, and the per-thread pools that keep
//! them open between requests.

pub mod pool;

use std::time::Duration;

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
