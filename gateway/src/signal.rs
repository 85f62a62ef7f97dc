//! Shutdown signals: the first SIGTERM or SIGINT starts a graceful drain, a second one exits
//! at once.

use std::future::Future;
use std::io;

use tokio::signal::unix::{SignalKind, signal};

/// Exit status when a second signal cuts the drain short (128 + SIGINT).
const FORCED_EXIT: i32 = 130;

/// `SIGHUP`s from now on (the daemon reloads its config on each; [`crate::reload`]).
pub fn hangups() -> io::Result<tokio::signal::unix::Signal> {
    signal(SignalKind::hangup())
}

/// Installs the handlers and returns a future that completes on the first signal. Must be
/// called inside the runtime.
pub fn install() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down gracefully; a second signal exits at once");
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::warn!("second signal: exiting now");
            std::process::exit(FORCED_EXIT);
        });
    })
}
