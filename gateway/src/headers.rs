//! Header rewriting between client and worker: hop-by-hop headers removed (RFC 9110 §7.6.1),
//! `X-Forwarded-*`, `Forwarded` and `x-request-id` added ([`Added`]). (`Host` is the
//! worker's, set per attempt: written by `upstream::h1`, the authority for h2c.)

use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
];

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `Forwarded` (RFC 7239).
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Removes hop-by-hop headers, including every header the `Connection` header names, and
/// `Upgrade` unless the request is a protocol upgrade that is being relayed.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most requests carry none: one pass over the names (cheap comparisons) instead of a
    // hashed removal per hop-by-hop name.
    let any = headers.keys().any(|name| {
        name == header::CONNECTION || name == header::UPGRADE || HOP_BY_HOP.contains(name)
    });
    if !any {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if !(keep_upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// What the request path knows about the client, for the forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    /// The client address as Portico determined it.
    pub ip: IpAddr,
    /// `https` on TLS listeners, else `http`.
    pub scheme: &'static str,
    /// The host the client asked for (`Host` or `:authority`), if any.
    pub host: Option<&'a HeaderValue>,
}

/// Forwarding header values of one client connection, built once: the client address and
/// host rarely change between the requests of a connection.
#[derive(Debug, Default)]
pub struct ForwardingCache {
    /// The client address as a header value.
    ip: Option<HeaderValue>,
    /// The last `Forwarded` element, and the host it was built for.
    forwarded: Option<(Option<HeaderValue>, HeaderValue)>,
}

/// What Portico adds to a request on its way to a worker: this hop's forwarding headers
/// (`X-Forwarded-For` and `Forwarded` appended to the client's, `X-Forwarded-Proto` and
/// `X-Forwarded-Host` set) and the request id. Applied to the header map for hyper's clients
/// (h2c workers, WebSocket upgrades), or written by Portico's HTTP/1.1 encoder after the
/// client's own headers, which leaves the client's map as it came (`upstream::h1`).
#[derive(Debug, Clone)]
pub struct Added {
    /// This hop's `X-Forwarded-For` element: the client address.
    pub forwarded_for: HeaderValue,
    /// This hop's `Forwarded` element.
    pub forwarded: HeaderValue,
    /// `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// `X-Forwarded-Host`: the host the client asked for, when known.
    pub host: Option<HeaderValue>,
    /// `x-request-id`.
    pub request_id: HeaderValue,
}

impl Added {
    /// The headers for a request from `client`, from the connection's cached values.
    pub fn new(
        client: ClientInfo<'_>,
        cache: &mut ForwardingCache,
        request_id: HeaderValue,
    ) -> Added {
        let forwarded_for = cache
            .ip
            .get_or_insert_with(|| header_value(client.ip.to_string()))
            .clone();
        let forwarded = match &cache.forwarded {
            Some((host, element)) if host.as_ref() == client.host => element.clone(),
            _ => {
                let element = header_value(forwarded_element(client));
                cache.forwarded = Some((client.host.cloned(), element.clone()));
                element
            }
        };
        Added {
            forwarded_for,
            forwarded,
            proto: client.scheme,
            host: client.host.cloned(),
            request_id,
        }
    }

    /// Adds them to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        append(headers, X_FORWARDED_FOR, self.forwarded_for.clone());
        append(headers, FORWARDED, self.forwarded.clone());
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(self.proto));
        if let Some(host) = &self.host {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
        headers.insert(X_REQUEST_ID, self.request_id.clone());
    }

    /// Whether the client's header `name` is replaced (or, for the list headers, rewritten
    /// with this hop's element appended) by these.
    pub fn replaces(&self, name: &HeaderName) -> bool {
        name == X_FORWARDED_FOR
            || name == FORWARDED
            || name == X_FORWARDED_PROTO
            || name == X_REQUEST_ID
            || (self.host.is_some() && name == X_FORWARDED_HOST)
    }

    /// Writes them as header lines, the list headers after the client's values in
    /// `headers` (all of their lines, joined in order, as [`Added::apply`] does).
    pub fn write(&self, headers: &HeaderMap, out: &mut Vec<u8>) {
        write_list(out, &X_FORWARDED_FOR, headers, &self.forwarded_for);
        write_list(out, &FORWARDED, headers, &self.forwarded);
        write_line(out, X_FORWARDED_PROTO.as_str(), self.proto.as_bytes());
        if let Some(host) = &self.host {
            write_line(out, X_FORWARDED_HOST.as_str(), host.as_bytes());
        }
        write_line(out, X_REQUEST_ID.as_str(), self.request_id.as_bytes());
    }
}

/// Appends the header line `name: value` and its CRLF (HTTP/1.1 wire form).
pub fn write_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn write_list(out: &mut Vec<u8>, name: &HeaderName, headers: &HeaderMap, element: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    for previous in headers.get_all(name) {
        out.extend_from_slice(previous.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(element.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `for=<ip>;proto=<scheme>[;host="<host>"]`.
fn forwarded_element(client: ClientInfo<'_>) -> String {
    let mut element = String::with_capacity(64);
    element.push_str("for=");
    match client.ip {
        IpAddr::V4(v4) => element.push_str(&v4.to_string()),
        IpAddr::V6(v6) => {
            element.push_str("\"[");
            element.push_str(&v6.to_string());
            element.push_str("]\"");
        }
    }
    element.push_str(";proto=");
    element.push_str(client.scheme);
    if let Some(host) = client.host.and_then(|h| h.to_str().ok())
        // Quoted-string rules: no quotes or backslashes inside.
        && host.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        element.push_str(";host=\"");
        element.push_str(host);
        element.push('"');
    }
    element
}

/// Adds `value` to a list-valued header: after the client's values when it sent some (all
/// of its lines, joined in order).
fn append(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    match headers.entry(name) {
        Entry::Vacant(vacant) => {
            vacant.insert(value);
        }
        Entry::Occupied(mut occupied) => {
            let mut joined = String::new();
            for previous in occupied.iter().filter_map(|v| v.to_str().ok()) {
                joined.push_str(previous);
                joined.push_str(", ");
            }
            joined.push_str(value.to_str().unwrap_or(""));
            occupied.insert(header_value(joined));
        }
    }
}

fn header_value(text: String) -> HeaderValue {
    // Built from addresses, schemes and header values that were valid already.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    /// Hop-by-hop headers and the headers `Connection` names are removed; others stay.
    #[test]
    fn strips_hop_by_hop() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
        ]);
        remove_hop_by_hop(&mut headers, false);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-type"]);
    }

    /// An upgrade being relayed keeps `Upgrade`.
    #[test]
    fn keeps_upgrade_when_relaying() {
        let mut headers = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        remove_hop_by_hop(&mut headers, true);
        assert_eq!(headers["upgrade"], "websocket");
        assert!(!headers.contains_key("connection"));
    }

    fn id() -> HeaderValue {
        HeaderValue::from_static("req-1")
    }

    /// Forwarding headers are appended to what the client sent.
    #[test]
    fn appends_forwarding_headers() {
        let host = HeaderValue::from_static("api.example.com");
        let mut headers = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
            ("host", "api.example.com"),
        ]);
        let client = ClientInfo {
            ip: "::1".parse().unwrap(),
            scheme: "https",
            host: Some(&host),
        };
        let mut cache = ForwardingCache::default();
        Added::new(client, &mut cache, id()).apply(&mut headers);
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, ::1");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "api.example.com");
        assert_eq!(
            headers["forwarded"],
            "for=203.0.113.9, for=\"[::1]\";proto=https;host=\"api.example.com\""
        );

        // The next request of the connection reuses the values built for the first.
        let mut next = map(&[]);
        Added::new(client, &mut cache, id()).apply(&mut next);
        assert_eq!(next["x-forwarded-for"], "::1");
        assert_eq!(
            next["forwarded"],
            "for=\"[::1]\";proto=https;host=\"api.example.com\""
        );
    }

    /// A client's list header sent on several lines keeps every line, in order, before the
    /// appended hop (the chain `stage::client` walks stays whole).
    #[test]
    fn appends_after_every_line_of_a_list_header() {
        let mut headers = HeaderMap::new();
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.1"));
        headers.append(
            X_FORWARDED_FOR,
            HeaderValue::from_static("203.0.113.9, 10.0.0.2"),
        );
        let client = ClientInfo {
            ip: "10.0.0.1".parse().unwrap(),
            scheme: "http",
            host: None,
        };
        Added::new(client, &mut ForwardingCache::default(), id()).apply(&mut headers);
        let values: Vec<_> = headers.get_all(X_FORWARDED_FOR).iter().collect();
        assert_eq!(values, ["198.51.100.1, 203.0.113.9, 10.0.0.2, 10.0.0.1"]);
    }

    /// Written after the client's headers by the HTTP/1.1 encoder, or applied to the map for
    /// hyper's clients, the worker gets the same headers.
    #[test]
    fn written_and_applied_agree() {
        let host = HeaderValue::from_static("api.example.com");
        let cases = [
            (map(&[("content-type", "application/json")]), Some(&host)),
            (
                map(&[
                    ("x-forwarded-for", "198.51.100.1"),
                    ("x-forwarded-for", "203.0.113.9"),
                    ("forwarded", "for=198.51.100.1"),
                    ("x-forwarded-proto", "http"),
                    ("x-forwarded-host", "spoofed.example"),
                    ("x-request-id", "client-id"),
                    ("accept", "*/*"),
                ]),
                Some(&host),
            ),
            // No host known: the client's X-Forwarded-Host is kept.
            (map(&[("x-forwarded-host", "kept.example")]), None),
        ];
        for (headers, host) in cases {
            let client = ClientInfo {
                ip: "10.0.0.1".parse().unwrap(),
                scheme: "https",
                host,
            };
            let added = Added::new(client, &mut ForwardingCache::default(), id());
            let mut applied = headers.clone();
            added.apply(&mut applied);
            let mut out = Vec::new();
            for (name, value) in &headers {
                if !added.replaces(name) {
                    write_line(&mut out, name.as_str(), value.as_bytes());
                }
            }
            added.write(&headers, &mut out);
            let text = String::from_utf8(out).unwrap();
            let mut written = HeaderMap::new();
            for line in text.split_terminator("\r\n") {
                let (name, value) = line.split_once(": ").unwrap();
                written.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            assert_eq!(written, applied, "{text}");
        }
    }
}
