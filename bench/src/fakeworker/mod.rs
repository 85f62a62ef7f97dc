//! `fakeworker`: an OpenAI-compatible fake model server for tests, benchmarks and the demo.
//!
//! It speaks HTTP/1.1 and h2c on one port and answers:
//!
//! | route | what |
//! | --- | --- |
//! | `POST /v1/chat/completions`, `POST /v1/completions` | whole answers or SSE streams, timed by [`Options`] |
//! | `GET /v1/models` | the configured model |
//! | `GET /health` | 503 `booting` until `boot_delay`, then 200 `ok` |
//! | `GET /metrics` | vLLM's load gauges in Prometheus text |
//! | `ANY /echo[/...]` | the request as JSON |
//! | `GET /_fake/requests` | every request recorded so far |
//! | `GET /sse?events=N&interval_ms=M` | a plain SSE stream |
//! | `GET /slow?ms=N` | 200 after N ms |
//! | `ANY /status/{code}` | that status |
//! | `GET /ws` | WebSocket echo or stream mode |
//!
//! Anything else is a 404 in OpenAI's error shape. Every request except `/_fake/...` is
//! recorded and counted; one line per request is logged at [`ACCESS_LOG_TARGET`].

mod chat;
mod echo;
mod http;
mod metrics;
mod openai;
mod options;
mod server;
mod state;
mod utility;
mod ws;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use options::Options;
pub use server::ACCESS_LOG_TARGET;
pub use state::RecordedRequest;

use state::State;

/// Serves a fake worker on `listener` until it crashes (`crash_after`, when not exiting
/// the process). The binary calls this; tests usually prefer [`FakeWorker::spawn`].
pub async fn serve(opts: Options, listener: TcpListener) -> io::Result<()> {
    server::run(Arc::new(State::new(opts)), listener).await
}

/// A fake worker running on the caller's tokio runtime. Dropping it (or
/// [`FakeWorker::shutdown`]) stops the server and drops all its connections.
pub struct FakeWorker {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<io::Result<()>>,
}

impl FakeWorker {
    /// Binds [`Options::bind`] and starts serving on the current runtime; returns as soon as
    /// the socket is bound, so connections are accepted from then on.
    pub async fn spawn(opts: Options) -> io::Result<FakeWorker> {
        let listener = TcpListener::bind(opts.bind).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(opts));
        let task = tokio::spawn(server::run(Arc::clone(&state), listener));
        Ok(FakeWorker { addr, state, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base URL to send requests to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far (all but `/_fake/...`), oldest first; at most
    /// [`Options::record_limit`] of the most recent.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.recorded()
    }

    /// How many requests were received so far (all but `/_fake/...`), recorded or not.
    pub fn request_count(&self) -> u64 {
        self.state.requests_total()
    }

    /// Current `(running, waiting)` completion requests, as `/metrics` reports them.
    pub fn load(&self) -> (u64, u64) {
        self.state.load()
    }

    /// Stops the server and drops all its connections (same as dropping it).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        self.state.kill();
        self.task.abort();
    }
}

impl std::fmt::Debug for FakeWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeWorker")
            .field("addr", &self.addr)
            .field("opts", &self.state.opts)
            .finish_non_exhaustive()
    }
}
