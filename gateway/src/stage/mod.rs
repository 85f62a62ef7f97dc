//! The request pipeline's stages, one file each, composed in [`crate::pipeline`].
//!
//! - `client`: the client address (TCP peer, PROXY header, or trusted `X-Forwarded-For`).
//! - `route`: path → endpoint and the worker-side path.
//! - `ipfilter`: the endpoint's security groups → 403.
//! - `cors`: preflights and marked answers for browser origins the endpoint allows.
//! - `auth`: project bearer tokens → 401.
//! - `intake`: async routes → a durable job and 202; the async status API.
//! - `admit`: holds requests while the endpoint has no ready worker → 429 / 503.
//! - `balance`: which worker serves the request.
//! - `forward`: the exchange with the worker, HTTP/1.1 or h2c, streamed.
//! - `ws`: the WebSocket relay, once a worker accepted an upgrade.
//! - `telemetry`: metrics and the access-log line, finished when the response ends.

pub mod admit;
pub mod auth;
pub mod balance;
pub mod client;
pub mod cors;
pub mod forward;
pub mod intake;
pub mod ipfilter;
pub mod route;
pub mod telemetry;
pub mod ws;
