//! The request pipeline: every stage in order, composed in one function, with the reason
//! for each ordering rule (DESIGN.md §1).

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::access::ServerAccess;
use crate::body::{ProxyBody, RequestBody, RequestStats};
use crate::config::{Cors, WorkerProtocol};
use crate::error::{ProxyError, error_response};
use crate::headers::{Added, ClientInfo, ForwardingCache, X_REQUEST_ID};
use crate::idle::Watch;
use crate::routes::Routes;
use crate::stage::forward::{self, Failure};
use crate::stage::telemetry::Record;
use crate::stage::ws::{self, Session};
use crate::stage::{admit, auth, balance, client, cors, intake, ipfilter, route};

/// State every data-plane thread reads, each part swapped whole on reload.
#[derive(Debug)]
pub struct Shared {
    /// The routing table in force.
    pub routes: ArcSwap<Routes>,
    /// Trusted proxies and the admin token in force.
    pub access: ArcSwap<ServerAccess>,
    /// Turns true when the daemon shuts down (long-lived sessions watch it).
    pub stop: watch::Receiver<bool>,
    /// `server.grace_period_seconds`.
    pub grace: Duration,
}

/// What the pipeline knows about the client connection a request arrived on.
#[derive(Debug)]
pub struct Connection {
    /// Index of the listener (config order).
    pub listener: usize,
    /// Name of the listener.
    pub listener_name: Rc<str>,
    /// The listener's port, as security-group rules see it.
    pub port: u16,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The connection's client address: the TCP peer, or the PROXY header's source.
    pub addr: IpAddr,
    /// `addr` came from a PROXY protocol header.
    pub proxied: bool,
    /// `https` on TLS listeners, else `http`.
    pub scheme: &'static str,
    /// Set by the framing guard when a request head carried both `Content-Length` and
    /// `Transfer-Encoding`.
    pub framing_conflict: Arc<AtomicBool>,
    /// The connection's head and keep-alive deadlines.
    pub watch: Arc<Watch>,
    /// Forwarding header values built for this connection's client.
    pub forwarding: RefCell<ForwardingCache>,
}

/// Answers one request.
pub async fn handle(
    shared: &Shared,
    conn: &Connection,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    // No deadline runs on the connection while the request is in flight.
    let busy = conn.watch.busy();
    // Gateway health answers carry no telemetry (load balancers probe them every second),
    // only the request id every answer carries.
    match request.uri().path() {
        "/healthz" => return health(r#"{"status":"ok"}"#, request_id(request.headers())),
        "/readyz" => return health(r#"{"status":"ready"}"#, request_id(request.headers())),
        _ => {}
    }
    let request_id = request_id(request.headers());
    let client_ip = client::resolve(conn.addr, conn.proxied, request.headers(), &shared.access);
    let mut record = Record {
        start: Instant::now(),
        time: SystemTime::now(),
        request_id: request_id.clone(),
        client_ip,
        listener: Rc::clone(&conn.listener_name),
        method: request.method().clone(),
        uri: request.uri().clone(),
        version: request.version(),
        endpoint: None,
        worker: None,
        status: 0,
        stats: Rc::new(RequestStats::default()),
        first_byte: None,
        error: None,
        caller: None,
        ws: None,
        busy: Some(busy),
    };
    // Only browsers send `Origin`; the answer is marked for it once the endpoint is known.
    let origin = request.headers().get(header::ORIGIN).cloned();
    let (mut response, session) = match proxy(shared, conn, &mut record, request, &request_id).await
    {
        Ok(answer) => answer,
        Err(err) => {
            record.error = Some(err.code());
            (error_response(&err), None)
        }
    };
    record.status = response.status().as_u16();
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    if let (Some(origin), Some(endpoint)) = (origin, &record.endpoint) {
        cors::mark(endpoint, origin, response.headers_mut());
    }
    match session {
        // The session runs once hyper has sent the 101, and logs the request when it ends.
        Some(session) => {
            tokio::task::spawn_local(session.run(record));
            response
        }
        None => crate::body::with_record(response, record),
    }
}

async fn proxy(
    shared: &Shared,
    conn: &Connection,
    record: &mut Record,
    mut request: Request<Incoming>,
    request_id: &HeaderValue,
) -> Result<(Response<ProxyBody>, Option<Session>), ProxyError> {
    // Framing before anything else: a request whose length is ambiguous is never routed
    // (request smuggling).
    if conn.framing_conflict.load(Ordering::Relaxed)
        && request.headers().contains_key(header::TRANSFER_ENCODING)
    {
        return Err(ProxyError::BadRequest {
            reason: "both Content-Length and Transfer-Encoding are present",
        });
    }

    // 1. route: every later stage belongs to an endpoint.
    let routes = shared.routes.load();
    let (endpoint, rest_start) = route::resolve(&routes, conn.listener, request.uri().path())?;
    record.endpoint = Some(Arc::clone(&endpoint));

    // 2. ipfilter before auth, so that a denied source learns nothing about tokens; both
    //    read the policy in force now (a reload applies to the next request).
    let access = endpoint.access.load();
    ipfilter::check(&endpoint, &access, record.client_ip, conn.port)?;
    // CORS preflights come before auth: browsers send them without credentials.
    if let Some(answer) = cors::preflight(&endpoint, &request) {
        return Ok((answer, None));
    }
    // A CORS preflight on an async path is answered before auth: browsers send it without
    // credentials, and it reveals nothing.
    let rest = request.uri().path().get(rest_start..).unwrap_or("");
    let call = intake::classify(&endpoint, rest);
    // With `cors_origins` set, only its origins get preflight answers, async paths included.
    if let Some(call) = &call
        && request.method() == Method::OPTIONS
        && endpoint.config.cors == Cors::Off
    {
        return Ok((intake::preflight(call, &request), None));
    }
    // 3. auth: the caller is named by its token's name from here on.
    record.caller = auth::check(&endpoint, &access, request.headers_mut())?;
    drop(access);

    // The declared length is checked before any worker is touched (or any job stored); a
    // chunked body is counted as it streams.
    let limit = endpoint.config.max_body_bytes;
    if declared_length(request.headers()).is_some_and(|n| n > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }

    // 4. async routes come before admit: an accepted job is queued even when no worker
    //    runs.
    if let Some(call) = call {
        // Boxed: the async path's state should not grow every request's future.
        let response = Box::pin(intake::serve(&endpoint, call, request, record)).await?;
        return Ok((response, None));
    }

    // Scoped: the future keeps nothing of it but the result.
    let added = {
        let host = request.headers().get(header::HOST).cloned().or_else(|| {
            let authority = request.uri().authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        });
        let client = ClientInfo {
            // Each hop appends the address it received the request from.
            ip: conn.addr,
            scheme: conn.scheme,
            host: host.as_ref(),
        };
        Added::new(
            client,
            &mut conn.forwarding.borrow_mut(),
            request_id.clone(),
        )
    };
    let upgrade = ws::is_upgrade(&request);
    let request = request.map(|body| RequestBody::new(body, Rc::clone(&record.stats), limit));
    let mut request = forward::prepare(request, rest_start);
    // Portico's HTTP/1.1 client writes the added headers after the client's; hyper's
    // clients (upgrades, h2c workers) need them in the map.
    let added = if upgrade || endpoint.config.workers.protocol != WorkerProtocol::Http1 {
        added.apply(request.headers_mut());
        if upgrade {
            ws::prepare(&mut request);
        }
        None
    } else {
        Some(added)
    };

    // 5. admit: hold the request while the endpoint wakes, before balance needs a ready
    //    worker. After the checks above, so that a refused request never wakes workers.
    let mut request = match admit::admit(&endpoint, request, added.as_ref(), record).await? {
        admit::Admitted::Now(request) => request,
        admit::Admitted::Waking(response) => return Ok((response, None)),
    };

    // 6. balance, then 7. forward (or relay a WebSocket), with one retry on another worker
    //    when nothing reached the first (connect failed); never after the worker may have
    //    seen the request.
    let mut exclude = None;
    loop {
        let worker = balance::pick(&endpoint, exclude)?;
        record.worker = Some(Arc::clone(&worker));
        let attempt = if upgrade {
            // Boxed: the rare upgrade path should not grow every request's future.
            Box::pin(ws::open(
                &endpoint,
                &worker,
                request,
                &shared.stop,
                shared.grace,
            ))
            .await
        } else {
            forward::send(&endpoint, &worker, request, added.as_ref(), record)
                .await
                .map(|response| (response, None))
        };
        match attempt {
            Ok(answer) => return Ok(answer),
            Err(Failure::NotSent { request: again, .. }) if exclude.is_none() => {
                exclude = Some(worker.id());
                request = *again;
            }
            Err(Failure::NotSent { error, .. } | Failure::Failed(error)) => return Err(error),
        }
    }
}

/// The client's `x-request-id` when it is sane, else a new UUID v7.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(value) if !value.is_empty() && value.len() <= 128 && value.to_str().is_ok() => {
            value.clone()
        }
        _ => new_request_id(),
    }
}

/// A UUID v7: milliseconds since the epoch, then random bits from the thread's generator.
/// (`Uuid::now_v7` serialises every caller on one global mutex.)
fn new_request_id() -> HeaderValue {
    let millis = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let random: [u8; 10] = rand::random();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut text);
    // Owned bytes behind a reference count: the three clones of the id (record, worker
    // request, response) share one allocation, and nothing is copied again. Hex digits and
    // hyphens are always a valid header value.
    HeaderValue::from_maybe_shared(Bytes::from_owner(text))
        .unwrap_or(HeaderValue::from_static("invalid"))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn health(body: &'static str, request_id: HeaderValue) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(X_REQUEST_ID, request_id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated request ids are version 7 UUIDs carrying the current time, and distinct.
    #[test]
    fn request_ids_are_uuid_v7() {
        let a: uuid::Uuid = new_request_id().to_str().unwrap().parse().unwrap();
        let b: uuid::Uuid = new_request_id().to_str().unwrap().parse().unwrap();
        assert_eq!(a.get_version_num(), 7);
        assert_ne!(a, b);
        let (secs, _) = a.get_timestamp().unwrap().to_unix();
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(secs) <= 1);
    }

    /// A sane client id is kept; an empty or oversized one is replaced.
    #[test]
    fn client_request_ids_are_kept_when_sane() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(
            X_REQUEST_ID,
            HeaderValue::from_str(&"x".repeat(129)).unwrap(),
        );
        assert_eq!(request_id(&headers).len(), 36);
        headers.insert(X_REQUEST_ID, HeaderValue::from_static(""));
        assert_eq!(request_id(&headers).len(), 36);
    }
}

#[cfg(test)]
mod sizes {
    use super::*;

    fn output_size<A, B, C, R>(_: &impl Fn(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// hyper keeps a box the size of this future for every client connection, idle or not,
    /// and the request moves it on every request: rare paths (holding, async intake,
    /// connecting, WebSocket, the HTTP/1.1 exchange's head and upload state) are boxed so
    /// that they do not grow it. 3,384 bytes with rustc 1.95: 3,736 before the rare paths
    /// were boxed, 3,040 after, then the headers Portico adds ([`Added`], ~220 bytes), kept
    /// for the HTTP/1.1 encoder instead of growing the client's header map (2.3k
    /// instructions per request).
    #[test]
    fn the_request_future_stays_small() {
        let handle =
            |s: &'static Shared, c: &'static Connection, r: Request<Incoming>| handle(s, c, r);
        let size = output_size(&handle);
        assert!(size <= 3_450, "the pipeline's future grew to {size} bytes");
    }
}
