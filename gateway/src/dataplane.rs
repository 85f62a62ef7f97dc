//! The data plane: one OS thread per core, each with its own current-thread runtime, its
//! own `SO_REUSEPORT` socket per listener and its own upstream pools, so the request path
//! takes no lock and wakes no other thread (PERFORMANCE.md).

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::LocalSet;
use tokio_rustls::TlsAcceptor;

use crate::accesslog;
use crate::config::Server;
use crate::framing::FramingGuard;
use crate::idle::{self, Watch};
use crate::listen;
use crate::pipeline::{self, Connection, Shared};
use crate::proxyproto::{self, Header};
use crate::runtime::LocalExec;
use crate::stage::ws;

/// How long a client may take to complete a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a trusted proxy may take to send the PROXY protocol header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A configured listener with one socket per data-plane thread.
pub struct DataListener {
    /// Index in config order.
    pub index: usize,
    /// Listener name.
    pub name: String,
    /// One socket per thread (the first is the one bound at start-up).
    pub sockets: Vec<StdListener>,
    /// TLS, when configured.
    pub tls: Option<TlsAcceptor>,
    /// Every connection starts with a PROXY protocol header.
    pub proxy_protocol: bool,
}

impl DataListener {
    /// Gives `socket` siblings for `threads` threads: sockets bound to the same address with
    /// `SO_REUSEPORT`, so the kernel spreads connections over the threads. Where that is not
    /// possible (a socket handed over without the option), the threads share one accept
    /// queue through duplicates of the socket.
    pub fn new(
        index: usize,
        name: String,
        socket: StdListener,
        threads: usize,
        tls: Option<TlsAcceptor>,
        proxy_protocol: bool,
    ) -> io::Result<DataListener> {
        let addr = socket.local_addr()?;
        let mut sockets = Vec::with_capacity(threads);
        sockets.push(socket);
        for _ in 1..threads {
            let sibling = match listen::bind_one(addr) {
                Ok(sibling) => sibling,
                Err(_) => sockets[0].try_clone()?,
            };
            sockets.push(sibling);
        }
        Ok(DataListener {
            index,
            name,
            sockets,
            tls,
            proxy_protocol,
        })
    }
}

/// The thread's handle on [`Shared`]: one `Arc` clone per thread, and requests clone the
/// `Rc`, which costs no atomic operation.
struct ThreadShared {
    shared: Arc<Shared>,
}

/// What a thread's accept loop knows about its listener.
struct ListenerInfo {
    index: usize,
    name: Rc<str>,
    port: u16,
    tls: Option<TlsAcceptor>,
    proxy_protocol: bool,
}

/// One thread's share of a listener, as handed to the thread.
struct Share {
    index: usize,
    name: String,
    socket: StdListener,
    tls: Option<TlsAcceptor>,
    proxy_protocol: bool,
}

/// Starts `threads` data-plane threads serving `listeners` until `stop` turns true; each
/// then drains its connections for up to `server.grace_period_seconds`.
pub fn start(
    shared: Arc<Shared>,
    listeners: Vec<DataListener>,
    threads: usize,
    server: &Server,
    stop: watch::Receiver<bool>,
) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut shares: Vec<Vec<Share>> = (0..threads).map(|_| Vec::new()).collect();
    for listener in listeners {
        for (thread, socket) in listener.sockets.into_iter().enumerate() {
            shares[thread].push(Share {
                index: listener.index,
                name: listener.name.clone(),
                socket,
                tls: listener.tls.clone(),
                proxy_protocol: listener.proxy_protocol,
            });
        }
    }
    let mut handles = Vec::with_capacity(threads);
    for (thread, share) in shares.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        let server = server.clone();
        let handle = std::thread::Builder::new()
            .name(format!("portico-data-{thread}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        tracing::error!(error = %err, "data-plane runtime failed to start");
                        return;
                    }
                };
                LocalSet::new().block_on(&runtime, serve_thread(shared, share, server, stop));
            })?;
        handles.push(handle);
    }
    Ok(handles)
}

async fn serve_thread(
    shared: Arc<Shared>,
    share: Vec<Share>,
    server: Server,
    mut stop: watch::Receiver<bool>,
) {
    let shared = Rc::new(ThreadShared { shared });
    let graceful = Rc::new(GracefulShutdown::new());
    let builder = Rc::new(connection_builder(&server));

    let mut accepting = Vec::new();
    for Share {
        index,
        name,
        socket,
        tls,
        proxy_protocol,
    } in share
    {
        let socket = match TcpListener::from_std(socket) {
            Ok(socket) => socket,
            Err(err) => {
                tracing::error!(listener = %name, error = %err, "listener unusable");
                continue;
            }
        };
        let port = socket.local_addr().map_or(0, |addr| addr.port());
        let info = Rc::new(ListenerInfo {
            index,
            name: Rc::from(name.as_str()),
            port,
            tls,
            proxy_protocol,
        });
        accepting.push(tokio::task::spawn_local(accept_loop(
            socket,
            info,
            Rc::clone(&shared),
            Rc::clone(&builder),
            Rc::clone(&graceful),
            stop.clone(),
        )));
    }
    // Slow heads and idle keep-alive connections: one sweep for all of the thread's
    // connections instead of a timer per request.
    let sweeper = tokio::task::spawn_local(idle::sweep(
        server.header_read_timeout,
        server.keepalive_timeout,
    ));
    let flusher = tokio::task::spawn_local(async {
        let mut ticks = tokio::time::interval(accesslog::FLUSH_INTERVAL);
        loop {
            ticks.tick().await;
            accesslog::flush();
        }
    });

    let _ = stop.wait_for(|stopped| *stopped).await;
    // Accept loops end on the same signal and drop their sockets: nothing new arrives.
    for task in accepting {
        let _ = task.await;
    }
    let grace = server.grace_period;
    if let Ok(graceful) = Rc::try_unwrap(graceful)
        && tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
    {
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "grace period over; closing connections"
        );
    }
    // WebSocket sessions close themselves (1001) once the grace period is over; give them
    // the moment their closing handshake takes.
    let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(2);
    while ws::open_sessions() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flusher.abort();
    sweeper.abort();
    accesslog::flush();
}

fn connection_builder(server: &Server) -> auto::Builder<LocalExec> {
    let mut builder = auto::Builder::new(LocalExec);
    builder
        .http1()
        .timer(TokioTimer::new())
        // Slow heads are closed by the thread's sweep (idle.rs), which also enforces the
        // keep-alive timeout; hyper's head timer would cost a timer per request.
        .header_read_timeout(None)
        .max_headers(server.max_headers)
        .max_buf_size(server.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(server.keepalive_timeout / 2))
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

async fn accept_loop(
    socket: TcpListener,
    listener: Rc<ListenerInfo>,
    shared: Rc<ThreadShared>,
    builder: Rc<auto::Builder<LocalExec>>,
    graceful: Rc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            accepted = socket.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = %listener.name, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Connections hold a watcher, not the shutdown handle: once the accept loops end,
        // the thread owns the handle alone and can drain.
        tokio::task::spawn_local(serve_connection(
            stream,
            peer,
            Rc::clone(&listener),
            Rc::clone(&shared),
            Rc::clone(&builder),
            graceful.watcher(),
        ));
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Rc<ListenerInfo>,
    shared: Rc<ThreadShared>,
    builder: Rc<auto::Builder<LocalExec>>,
    watcher: Watcher,
) {
    let Some((addr, proxied)) = client_address(&stream, peer, &listener, &shared).await else {
        return;
    };
    let framing_conflict = Arc::new(AtomicBool::new(false));
    let watch = Watch::new();
    let stream = FramingGuard::new(stream, Arc::clone(&framing_conflict), Arc::clone(&watch));
    let conn = Connection {
        listener: listener.index,
        listener_name: Rc::clone(&listener.name),
        port: listener.port,
        peer,
        addr,
        proxied,
        scheme: if listener.tls.is_some() {
            "https"
        } else {
            "http"
        },
        framing_conflict,
        watch,
        forwarding: Default::default(),
    };
    match &listener.tls {
        None => serve_http(stream, conn, shared, &builder, watcher).await,
        Some(acceptor) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // HTTP/2 is left to hyper's keep-alive (idle.rs); on TLS, ALPN tells.
                    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                        conn.watch.set_http2();
                    }
                    serve_http(tls, conn, shared, &builder, watcher).await
                }
                Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// The connection's client address: the TCP peer, or on a PROXY protocol listener the
/// header's source (true when it came from a header). `None`: the connection is refused.
async fn client_address(
    stream: &TcpStream,
    peer: SocketAddr,
    listener: &ListenerInfo,
    shared: &ThreadShared,
) -> Option<(IpAddr, bool)> {
    let peer_ip = ipfilter::normalize(peer.ip());
    if !listener.proxy_protocol {
        return Some((peer_ip, false));
    }
    // A PROXY header is believed only from a trusted proxy: anyone else could name any
    // address. Untrusted peers are refused outright, header or not.
    if !shared.shared.access.load().is_trusted(peer_ip) {
        tracing::debug!(%peer, listener = %listener.name, "PROXY protocol listener: peer is not a trusted proxy; refused");
        return None;
    }
    match proxyproto::read_header(stream, PROXY_HEADER_TIMEOUT).await {
        Ok(Header::Proxied { source, .. }) => Some((ipfilter::normalize(source.ip()), true)),
        Ok(Header::Local) => Some((peer_ip, false)),
        Err(err) => {
            tracing::debug!(%peer, listener = %listener.name, error = %err, "bad PROXY protocol header; refused");
            None
        }
    }
}

async fn serve_http<S>(
    stream: S,
    conn: Connection,
    shared: Rc<ThreadShared>,
    builder: &auto::Builder<LocalExec>,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Rc::new(conn);
    let service = service_fn(move |request| {
        let conn = Rc::clone(&conn);
        let shared = Rc::clone(&shared);
        async move { Ok::<_, Infallible>(pipeline::handle(&shared.shared, &conn, request).await) }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    if let Err(err) = watcher.watch(connection).await {
        tracing::debug!(error = %err, "client connection ended with an error");
    }
}
