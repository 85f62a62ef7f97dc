//! Executors for the data plane's current-thread runtimes.

use std::future::Future;

/// Spawns hyper's background tasks (HTTP/2 streams, connection drivers) on the current
/// thread's `LocalSet`, so they stay on the thread that owns their connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}
