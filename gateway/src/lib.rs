//! Portico: the front door of an inference cluster.
//!
//! One daemon between clients and inference workers: it routes
//! `/project/<p>/endpoint/<id>/…` traffic to workers and adds what a model platform needs
//! there. `main.rs` only parses the command line and calls [`run`] with bound listeners.
//!
//! Layout:
//! - `cli`: the command line (`run`, `validate`, `token new`).
//! - `config`: the TOML schema and the validated, typed [`config::Config`].
//! - `listen`: binds the configured sockets.
//! - `server`: [`run`], the accept loops and graceful drain.
//! - `error`: [`error::ProxyError`] and its one mapping to a JSON response.
//! - `signal`: SIGTERM/SIGINT handling.
//! - `logging`: tracing set-up.
//! - `token`: token generation and hashing.

pub mod cli;
pub mod config;
pub mod error;
pub mod listen;
pub mod logging;
pub mod server;
pub mod signal;
pub mod token;

pub use server::{RunError, run};
