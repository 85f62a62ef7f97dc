//! The request pipeline's stages, one file each, composed in [`crate::pipeline`].
//!
//! - `route`: path → endpoint and the worker-side path.
//! - `balance`: which worker serves the request.
//! - `forward`: the exchange with the worker, HTTP/1.1 or h2c, streamed.
//! - `ws`: the WebSocket relay, once a worker accepted an upgrade.
//! - `telemetry`: metrics and the access-log line, finished when the response ends.
//!
//! Security groups and tokens (ipfilter, auth), async routes and request holding (admit)
//! take their places in the pipeline as they are built.

pub mod balance;
pub mod forward;
pub mod route;
pub mod telemetry;
pub mod ws;
