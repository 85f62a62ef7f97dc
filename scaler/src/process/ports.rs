//! Free loopback ports for new replicas.

use std::io;
use std::net::{Ipv4Addr, TcpListener};

/// A port on 127.0.0.1 that was free a moment ago.
///
/// The kernel picks it (bind to port 0) and the socket is closed at once so the worker can
/// bind it. Another process could take it in between; the worker then fails to bind, exits,
/// and is restarted on a fresh port like any other crash.
pub(super) fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A free port is non-zero and can be bound again once returned.
    #[test]
    fn free_port_is_bindable() {
        let port = free_port().expect("free port");
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port is free again");
    }
}
