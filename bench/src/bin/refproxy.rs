//! `refproxy`: the floor of a hyper reverse proxy, for benchmarks only.
//!
//! The data-plane design of shared/PERFORMANCE.md and nothing else: one current-thread
//! runtime on one SO_REUSEPORT-free listener, HTTP/1.1 both sides, upstream connections
//! owned by the same thread (`client::conn::http1::handshake`, driver spawned locally) and
//! reused from a stack. No routing, headers, limits, timeouts, metrics or logs. Portico's
//! CPU per request measured beside it shows what everything Portico adds costs.
//!
//! Usage: `refproxy --upstream 127.0.0.1:8000` prints `listening on <addr>`.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// The floor of a hyper reverse proxy (benchmarks only).
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The one upstream, `host:port`.
    #[arg(long)]
    upstream: SocketAddr,
}

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// Idle upstream connections of this thread.
struct Pool {
    upstream: SocketAddr,
    idle: RefCell<Vec<SendRequest<Incoming>>>,
}

impl Pool {
    async fn checkout(&self) -> anyhow::Result<SendRequest<Incoming>> {
        loop {
            let idle = self.idle.borrow_mut().pop();
            let Some(mut sender) = idle else { break };
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let stream = TcpStream::connect(self.upstream).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::task::spawn_local(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

async fn forward(
    pool: Rc<Pool>,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse()
        .unwrap_or_default();
    *request.uri_mut() = path;
    let answer = async {
        let mut sender = pool.checkout().await?;
        let response = sender.send_request(request).await?;
        // Back to the stack at once: hyper queues the next request behind this body.
        pool.idle.borrow_mut().push(sender);
        anyhow::Ok(response.map(BodyExt::boxed_unsync))
    };
    Ok(answer.await.unwrap_or_else(|_| {
        let mut response = Response::new(
            Full::new(Bytes::from_static(b"bad gateway"))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *response.status_mut() = http::StatusCode::BAD_GATEWAY;
        response
    }))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(args.listen).await.context("bind")?;
        println!("listening on {}", listener.local_addr()?);
        let pool = Rc::new(Pool {
            upstream: args.upstream,
            idle: RefCell::new(Vec::new()),
        });
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let pool = Rc::clone(&pool);
            tokio::task::spawn_local(async move {
                let service = service_fn(move |request| forward(Rc::clone(&pool), request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
