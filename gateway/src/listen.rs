//! Binding the configured sockets before the daemon starts, so a test (or a supervisor) can
//! hand `run` sockets bound to port 0 and read back the real addresses.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;

/// Accept backlog for every listener; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 4096;

/// The bound sockets: one per `[[listener]]`, plus the admin listener.
#[derive(Debug)]
pub struct Listeners {
    /// Data-plane listeners by name, in config order.
    pub data: Vec<(String, TcpListener)>,
    /// The admin API listener.
    pub admin: TcpListener,
}

impl Listeners {
    /// The bound addresses by name, data listeners first and `admin` last.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        let mut out: Vec<(String, SocketAddr)> = self
            .data
            .iter()
            .filter_map(|(name, socket)| Some((name.clone(), socket.local_addr().ok()?)))
            .collect();
        if let Ok(addr) = self.admin.local_addr() {
            out.push(("admin".to_string(), addr));
        }
        out
    }
}

/// Binds every listener of `config`.
pub fn bind(config: &Config) -> io::Result<Listeners> {
    let mut data = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        let socket = bind_one(listener.address).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("listener {} on {}: {err}", listener.name, listener.address),
            )
        })?;
        data.push((listener.name.clone(), socket));
    }
    let admin = bind_one(config.server.admin_listen).map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("admin listener on {}: {err}", config.server.admin_listen),
        )
    })?;
    Ok(Listeners { data, admin })
}

/// One non-blocking listening socket. An IPv6 wildcard also accepts IPv4 clients (as mapped
/// addresses), which the security-group matcher normalizes.
pub fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    // Each data-plane thread binds a sibling socket to the same address.
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
