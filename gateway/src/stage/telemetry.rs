//! Telemetry: what a request did, recorded when its response ends (or is abandoned):
//! `portico_requests_total`, `portico_request_duration_seconds`, the endpoint's traffic
//! analytics (with the token usage the response body reported, and
//! `portico_tokens_total`), and one access-log line.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Uri, Version};

use crate::accesslog::{self, Line, Rfc3339};
use crate::body::RequestStats;
use crate::endpoint::Endpoint;
use crate::idle::Busy;
use crate::traffic::{Sample, Usage};
use crate::worker::Worker;

/// The record of one request, carried through the pipeline and finished by the response
/// body.
#[derive(Debug)]
pub struct Record {
    /// When the request arrived.
    pub start: Instant,
    /// Wall-clock arrival time, for the log.
    pub time: SystemTime,
    /// `x-request-id`.
    pub request_id: HeaderValue,
    /// Client address.
    pub client_ip: IpAddr,
    /// Name of the listener.
    pub listener: Rc<str>,
    /// HTTP method.
    pub method: http::Method,
    /// The request's URI as the client sent it (the log keeps only its path).
    pub uri: Uri,
    /// Client's HTTP version.
    pub version: Version,
    /// The endpoint, once routed.
    pub endpoint: Option<Arc<Endpoint>>,
    /// The worker, once picked.
    pub worker: Option<Arc<Worker>>,
    /// Status sent.
    pub status: u16,
    /// Request body accounting.
    pub stats: Rc<RequestStats>,
    /// Time to the worker's response headers.
    pub first_byte: Option<Duration>,
    /// The name of the project token that authenticated the request.
    pub caller: Option<Arc<str>>,
    /// Error code when Portico answered itself.
    pub error: Option<&'static str>,
    /// What a relayed WebSocket session carried.
    pub ws: Option<WsSummary>,
    /// Holds the client connection's deadlines until the response (or session) ends.
    pub busy: Option<Busy>,
}

impl Record {
    /// A copy for a task that forwards on the request's behalf after its response was
    /// sent (a held streaming request); the original stays with the response and is the one
    /// logged.
    pub fn detached(&self) -> Record {
        Record {
            start: self.start,
            time: self.time,
            request_id: self.request_id.clone(),
            client_ip: self.client_ip,
            listener: Rc::clone(&self.listener),
            method: self.method.clone(),
            uri: self.uri.clone(),
            version: self.version,
            endpoint: self.endpoint.clone(),
            worker: None,
            status: 0,
            stats: Rc::clone(&self.stats),
            first_byte: None,
            caller: self.caller.clone(),
            error: None,
            ws: None,
            busy: None,
        }
    }
}

/// Counters of one WebSocket session, for its access-log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct WsSummary {
    /// Messages from the client.
    pub messages_in: u64,
    /// Messages to the client.
    pub messages_out: u64,
    /// Payload bytes from the client.
    pub bytes_in: u64,
    /// Payload bytes to the client.
    pub bytes_out: u64,
    /// The close code that ended the session.
    pub close_code: Option<u16>,
}

impl WsSummary {
    /// Counts one relayed message.
    pub fn count(&mut self, from_client: bool, bytes: u64) {
        if from_client {
            self.messages_in += 1;
            self.bytes_in += bytes;
        } else {
            self.messages_out += 1;
            self.bytes_out += bytes;
        }
    }
}

impl Record {
    /// Records metrics and traffic and writes the access-log line.
    pub fn finish(self, bytes_out: u64, completed: bool) {
        self.finish_with_usage(bytes_out, completed, None);
    }

    /// [`Record::finish`] with the token usage found at the end of the response body.
    pub fn finish_with_usage(self, bytes_out: u64, completed: bool, usage: Option<Usage>) {
        let duration = self.start.elapsed();
        let bytes_in = self.stats.bytes_in.get();
        if let Some(endpoint) = &self.endpoint {
            endpoint
                .metrics
                .request(self.status, duration.as_secs_f64());
            // A WebSocket session's traffic is its messages' payload.
            let (traffic_in, traffic_out) = match self.ws {
                Some(ws) => (ws.bytes_in, ws.bytes_out),
                None => (bytes_in, bytes_out),
            };
            endpoint.traffic.record(&Sample {
                at: self.time + duration,
                status: self.status,
                duration,
                bytes_in: traffic_in,
                bytes_out: traffic_out,
                caller: self.caller.as_ref(),
                usage,
            });
            if let Some(usage) = usage {
                endpoint.metrics.tokens(self.caller.as_deref(), usage);
            }
        }
        accesslog::log(&Line {
            time: Rfc3339(self.time),
            request_id: self.request_id.to_str().unwrap_or("-"),
            client_ip: self.client_ip,
            listener: &self.listener,
            method: self.method.as_str(),
            path: self.uri.path(),
            protocol: version_str(self.version),
            project: self.endpoint.as_deref().map(Endpoint::project),
            endpoint: self.endpoint.as_deref().map(Endpoint::id),
            worker: self.worker.as_deref().map(Worker::label),
            caller: self.caller.as_deref(),
            status: self.status,
            bytes_in,
            bytes_out,
            duration,
            first_byte: self.first_byte,
            completed,
            error: self.error,
            ws_messages_in: self.ws.map(|ws| ws.messages_in),
            ws_messages_out: self.ws.map(|ws| ws.messages_out),
            ws_bytes_in: self.ws.map(|ws| ws.bytes_in),
            ws_bytes_out: self.ws.map(|ws| ws.bytes_out),
            ws_close_code: self.ws.and_then(|ws| ws.close_code),
        });
    }
}

fn version_str(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}
