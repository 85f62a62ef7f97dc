//! Portico's test and benchmark companions.
//!
//! The heart of this crate is `fakeworker`: an OpenAI-compatible fake model server that
//! answers like vLLM does (chat and text completions, streaming over SSE, Prometheus load
//! gauges, a WebSocket endpoint) with timing, load limits and failures chosen by the caller.
//! Tests start it in-process with [`FakeWorker::spawn`]; the demo and the benchmarks run the
//! `fakeworker` binary, which is a thin command-line front for [`serve`].
//!
//! Layout:
//! - [`fakeworker`]: the fake worker itself.
//!   - `options`: [`Options`], the behaviour knobs, builder style.
//!   - `state`: counters, gauges, the request record and the kill switch shared by all
//!     connections.
//!   - `server`: the accept loop, the per-connection task and the routing table.
//!   - `http`: response helpers (JSON bodies, OpenAI-shaped errors, SSE headers).
//!   - `openai`: wire types of the completion APIs and token counting.
//!   - `chat`: `/v1/chat/completions` and `/v1/completions`, whole and streamed.
//!   - `metrics`: the Prometheus text of `/metrics`.
//!   - `echo`: `/echo` and `/_fake/requests`, for tests that check what reached a worker.
//!   - `utility`: `/health`, `/sse`, `/slow`, `/status/{code}`, `/v1/models`.
//!   - `ws`: the WebSocket endpoint `/ws`.
//! - [`harness`]: what the benchmarks that run Portico (`scalebench`, `asyncbench`) share:
//!   the run directory, signals and process clean-up, the HTTP client, percentiles and dates.

pub mod fakeworker;
pub mod harness;

pub use fakeworker::{ACCESS_LOG_TARGET, FakeWorker, Options, RecordedRequest, serve};
