//! Client address: who the request is from, for security groups, logs and forwarding
//! headers.
//!
//! The connection's address is the TCP peer, or the source in the PROXY protocol header on
//! listeners that require one (read before any HTTP, in `dataplane`, and only from trusted
//! peers). On other connections from a trusted proxy, `X-Forwarded-For` names the client:
//! walking its hops from the right, the first one that is not itself a trusted proxy. Never
//! the leftmost, which the client wrote itself.

use std::net::{IpAddr, SocketAddr};

use arc_swap::ArcSwap;
use http::HeaderMap;

use crate::access::ServerAccess;
use crate::headers::X_FORWARDED_FOR;

/// The address of the client behind a request on a connection from `addr`; `proxied` when
/// `addr` came from a PROXY protocol header (which is then final). The access settings are
/// read only when the request carries `X-Forwarded-For`.
pub fn resolve(
    addr: IpAddr,
    proxied: bool,
    headers: &HeaderMap,
    access: &ArcSwap<ServerAccess>,
) -> IpAddr {
    if proxied || !headers.contains_key(&X_FORWARDED_FOR) {
        return addr;
    }
    let access = access.load();
    if !access.is_trusted(addr) {
        return addr;
    }
    rightmost_untrusted(headers, addr, &access)
}

fn rightmost_untrusted(headers: &HeaderMap, peer: IpAddr, access: &ServerAccess) -> IpAddr {
    // Later headers were appended later: walk them, and each one's hops, right to left.
    let values: Vec<&[u8]> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(|value| value.as_bytes())
        .collect();
    let mut nearest = peer;
    for value in values.iter().rev() {
        for hop in value.rsplit(|&byte| byte == b',') {
            match parse_hop(hop) {
                Some(ip) if access.is_trusted(ip) => nearest = ip,
                Some(ip) => return ip,
                // An unreadable hop: nothing to its left can be trusted; the last trusted
                // proxy is the best-known client.
                None => return nearest,
            }
        }
    }
    // Every hop was a trusted proxy: the leftmost one is the client.
    nearest
}

/// One `X-Forwarded-For` hop: an address, optionally with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop).ok()?.trim();
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|addr| addr.ip()))?;
    Some(ipfilter::normalize(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use http::HeaderValue;
    use std::path::Path;

    fn access() -> ArcSwap<ServerAccess> {
        let config = Config::from_toml_str(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\"]",
            Path::new("."),
        )
        .expect("valid config");
        ArcSwap::from_pointee(ServerAccess::build(&config.server))
    }

    fn client(peer: &str, proxied: bool, xff: &[&str]) -> IpAddr {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append(&X_FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        resolve(peer.parse().unwrap(), proxied, &headers, &access())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// An untrusted peer's X-Forwarded-For is ignored: a spoofed header grants nothing.
    #[test]
    fn untrusted_peers_cannot_set_the_address() {
        assert_eq!(
            client("198.51.100.1", false, &["10.1.1.1"]),
            ip("198.51.100.1")
        );
        assert_eq!(client("198.51.100.1", false, &[]), ip("198.51.100.1"));
    }

    /// From a trusted peer, the rightmost hop that is not trusted decides, never the leftmost.
    #[test]
    fn trusted_peers_name_the_rightmost_untrusted_hop() {
        assert_eq!(
            client("10.0.0.1", false, &["203.0.113.5"]),
            ip("203.0.113.5")
        );
        assert_eq!(
            client("10.0.0.1", false, &["1.1.1.1, 203.0.113.5, 10.9.9.9"]),
            ip("203.0.113.5")
        );
        // Hops spread over several headers, later headers to the right.
        assert_eq!(
            client("10.0.0.1", false, &["1.1.1.1, 203.0.113.5", "10.2.2.2"]),
            ip("203.0.113.5")
        );
        // Ports, brackets and IPv4-mapped forms.
        assert_eq!(
            client("10.0.0.1", false, &["203.0.113.5:4711"]),
            ip("203.0.113.5")
        );
        assert_eq!(
            client("10.0.0.1", false, &["[2001:db8::1]:80"]),
            ip("2001:db8::1")
        );
        assert_eq!(
            client("10.0.0.1", false, &["::ffff:203.0.113.5"]),
            ip("203.0.113.5")
        );
        assert_eq!(
            client("::ffff:10.0.0.1", false, &["203.0.113.5"]),
            ip("203.0.113.5")
        );
    }

    /// All hops trusted: the leftmost; garbage: the nearest trusted hop, nothing to its left.
    #[test]
    fn edge_cases() {
        assert_eq!(
            client("10.0.0.1", false, &["10.3.3.3, 10.2.2.2"]),
            ip("10.3.3.3")
        );
        assert_eq!(
            client("10.0.0.1", false, &["1.1.1.1, garbage, 10.2.2.2"]),
            ip("10.2.2.2")
        );
        assert_eq!(client("10.0.0.1", false, &["1.1.1.1, "]), ip("10.0.0.1"));
        assert_eq!(client("10.0.0.1", false, &[]), ip("10.0.0.1"));
    }

    /// An address from a PROXY header is final: no X-Forwarded-For on top of it.
    #[test]
    fn proxy_protocol_addresses_are_final() {
        assert_eq!(client("10.0.0.1", true, &["203.0.113.5"]), ip("10.0.0.1"));
    }
}
