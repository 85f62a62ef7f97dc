//! PROXY protocol headers (HAProxy's `proxy-protocol.txt`, v1 text and v2 binary) on
//! listeners configured with `proxy_protocol = true`.
//!
//! A load balancer in front of such a listener starts every connection with a header that
//! names the client it accepted. [`parse`] reads one from a buffer without I/O;
//! [`read_header`] takes exactly the header off a socket and leaves the bytes after it (the
//! HTTP request or TLS handshake) to the next layer. Whether the peer may send a header at
//! all (is it a trusted proxy?) is the caller's decision.
//!
//! Parsing is strict and early: a buffer that can no longer be the start of a valid header
//! is an error at once, so a client speaking HTTP straight to the listener is refused on its
//! first byte instead of waiting for the timeout.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// The 12 bytes every v2 header starts with.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The 6 bytes every v1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, `\r\n` included (spec section 2.1).
const V1_MAX_LEN: usize = 107;
/// The v2 signature, version and command, family and transport, and length.
const V2_FIXED_LEN: usize = 16;
/// The most address and TLV bytes a v2 header may carry here. The spec allows 65535; real
/// proxies send a few hundred at most.
const V2_MAX_PAYLOAD: usize = 4096;
/// The longest header of either version.
const MAX_HEADER_LEN: usize = V2_FIXED_LEN + V2_MAX_PAYLOAD;
/// The longest textual IPv6 address (`ffff:…:ffff:255.255.255.255`).
const IPV6_MAX_TEXT_LEN: usize = 45;

/// What the header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied TCP connection (v1 `TCP4`/`TCP6`, v2 PROXY command with `AF_INET`/`AF_INET6`
    /// over `STREAM`).
    Proxied {
        /// The client the proxy accepted.
        source: SocketAddr,
        /// The address the client connected to, on the proxy.
        destination: SocketAddr,
    },
    /// The proxy's own connection (v2 LOCAL command, v1 `UNKNOWN`, or v2 `AF_UNSPEC` /
    /// `AF_UNIX`): use the TCP peer.
    Local,
}

/// The outcome of [`parse`] on a buffer that is not (yet) known to be wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header starts the buffer.
    Complete {
        /// What it said.
        header: Header,
        /// Its length in bytes: the bytes after it belong to the next layer.
        consumed: usize,
    },
    /// The buffer is a prefix of a valid header; more bytes are needed.
    Incomplete,
}

/// Why a connection's PROXY protocol header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection starts with neither the v1 nor the v2 signature.
    #[error("the connection does not start with a PROXY protocol header")]
    NotProxyProtocol,
    /// The header breaks the spec; the text says how.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// A valid header for something this listener cannot serve (UDP, unix datagrams).
    #[error("unsupported PROXY protocol header: {0}")]
    Unsupported(&'static str),
    /// A v1 header without `\r\n` within 107 bytes, or a v2 header with more than 4096 bytes
    /// of addresses and TLVs.
    #[error("PROXY protocol header too long")]
    TooLong,
    /// No complete header arrived in time.
    #[error("no complete PROXY protocol header within the timeout")]
    Timeout,
    /// Reading from the socket failed.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection before the header was complete.
    #[error("connection closed before the PROXY protocol header was complete")]
    Closed,
}

/// Parses a header at the start of `buf` (pure, no I/O).
///
/// [`Parsed::Incomplete`] only while `buf` is a prefix of some valid header; an error as soon
/// as it cannot be. v2 TLVs are skipped, not interpreted.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    if agrees_with(buf, V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() {
            return Ok(Parsed::Incomplete);
        }
        parse_v2(buf)
    } else if agrees_with(buf, V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Ok(Parsed::Incomplete);
        }
        parse_v1(buf)
    } else {
        Err(ProxyHeaderError::NotProxyProtocol)
    }
}

/// Reads exactly the header from `stream` (and nothing after it), within `timeout`.
///
/// The header is peeked until complete and only then read, so the bytes after it are still
/// in the socket for the next layer.
pub async fn read_header(
    stream: &TcpStream,
    timeout: Duration,
) -> Result<Header, ProxyHeaderError> {
    tokio::time::timeout(timeout, read_header_untimed(stream))
        .await
        .unwrap_or(Err(ProxyHeaderError::Timeout))
}

async fn read_header_untimed(stream: &TcpStream) -> Result<Header, ProxyHeaderError> {
    // tokio has no non-blocking peek, and its async `peek` returns at once while bytes are
    // queued: polling it for the rest of a partial header would spin. So peek through a
    // duplicate descriptor (std's `peek`; the socket is already non-blocking) inside
    // `try_io`, which clears readiness when no new byte came, race-free: readiness that
    // arrives during the peek survives.
    let peeker = std::net::TcpStream::from(stream.as_fd().try_clone_to_owned()?);
    let mut buf = vec![0; MAX_HEADER_LEN];
    let mut seen = 0;
    let (header, consumed) = loop {
        let ready = stream.ready(Interest::READABLE).await?;
        let peeked = stream.try_io(Interest::READABLE, || {
            let n = peeker.peek(&mut buf)?;
            if n == 0 || n > seen {
                Ok(n)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            }
        });
        let n = match peeked {
            Ok(0) => return Err(ProxyHeaderError::Closed),
            Ok(n) => n,
            // The closed state is never cleared: nothing new will come.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock && ready.is_read_closed() => {
                return Err(ProxyHeaderError::Closed);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => return Err(err.into()),
        };
        seen = n;
        match parse(&buf[..n])? {
            Parsed::Complete { header, consumed } => break (header, consumed),
            // `parse` decides within MAX_HEADER_LEN bytes; never wait on a full buffer.
            Parsed::Incomplete if n == buf.len() => return Err(ProxyHeaderError::TooLong),
            Parsed::Incomplete => {}
        }
    };
    let mut filled = 0;
    while filled < consumed {
        stream.readable().await?;
        match stream.try_read(&mut buf[filled..consumed]) {
            Ok(0) => return Err(ProxyHeaderError::Closed),
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(header)
}

/// True when `buf` and `signature` agree on their common length.
fn agrees_with(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

/// v2: `buf` holds at least the signature.
fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    use ProxyHeaderError::{Malformed, TooLong, Unsupported};

    let Some(&version_command) = buf.get(12) else {
        return Ok(Parsed::Incomplete);
    };
    if version_command >> 4 != 2 {
        return Err(Malformed("v2: version is not 2"));
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(Malformed("v2: command is neither LOCAL nor PROXY")),
    };
    let Some(&family) = buf.get(13) else {
        return Ok(Parsed::Incomplete);
    };
    // LOCAL: the spec says to discard the address block, family included.
    let address_len = if local {
        0
    } else {
        match family {
            0x00 => 0,
            0x11 => 12,
            0x21 => 36,
            0x31 => 216,
            0x12 | 0x22 | 0x32 => return Err(Unsupported("v2: datagram transport")),
            _ => return Err(Malformed("v2: unknown address family or transport")),
        }
    };
    let (Some(&high), Some(&low)) = (buf.get(14), buf.get(15)) else {
        return Ok(Parsed::Incomplete);
    };
    let len = usize::from(u16::from_be_bytes([high, low]));
    if len > V2_MAX_PAYLOAD {
        return Err(TooLong);
    }
    if len < address_len {
        return Err(Malformed("v2: length does not cover the addresses"));
    }
    let consumed = V2_FIXED_LEN + len;
    let Some(payload) = buf.get(V2_FIXED_LEN..consumed) else {
        return Ok(Parsed::Incomplete);
    };
    let header = match (local, family) {
        (false, 0x11) => {
            let mut rest = payload;
            let source = Ipv4Addr::from(take::<4>(&mut rest)?);
            let destination = Ipv4Addr::from(take::<4>(&mut rest)?);
            let source_port = u16::from_be_bytes(take(&mut rest)?);
            let destination_port = u16::from_be_bytes(take(&mut rest)?);
            Header::Proxied {
                source: SocketAddr::new(source.into(), source_port),
                destination: SocketAddr::new(destination.into(), destination_port),
            }
        }
        (false, 0x21) => {
            let mut rest = payload;
            let source = Ipv6Addr::from(take::<16>(&mut rest)?);
            let destination = Ipv6Addr::from(take::<16>(&mut rest)?);
            let source_port = u16::from_be_bytes(take(&mut rest)?);
            let destination_port = u16::from_be_bytes(take(&mut rest)?);
            Header::Proxied {
                source: SocketAddr::new(source.into(), source_port),
                destination: SocketAddr::new(destination.into(), destination_port),
            }
        }
        _ => Header::Local,
    };
    Ok(Parsed::Complete { header, consumed })
}

/// Takes the next `N` bytes off `bytes`.
fn take<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N], ProxyHeaderError> {
    let (head, rest) = bytes
        .split_first_chunk::<N>()
        .ok_or(ProxyHeaderError::Malformed(
            "v2: length does not cover the addresses",
        ))?;
    *bytes = rest;
    Ok(*head)
}

/// v1: `buf` starts with `PROXY `. The line ends at the first `\r`, which must be followed
/// by `\n`, within [`V1_MAX_LEN`] bytes.
fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    use ProxyHeaderError::{Malformed, TooLong};

    // A `\r` at index V1_MAX_LEN - 2 is the last that leaves room for `\n`.
    let window = &buf[..buf.len().min(V1_MAX_LEN - 1)];
    let Some(end) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        v1_fields(&window[V1_PREFIX.len()..], false)?;
        return if window.len() == V1_MAX_LEN - 1 {
            Err(TooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    if buf[end] == b'\n' {
        return Err(Malformed("v1: line feed without carriage return"));
    }
    // The content is final once `\r` is seen, so check it whole even before `\n` arrives.
    let header = v1_fields(&buf[V1_PREFIX.len()..end], true)?;
    match (buf.get(end + 1), header) {
        (None, _) => Ok(Parsed::Incomplete),
        (Some(b'\n'), Some(header)) => Ok(Parsed::Complete {
            header,
            consumed: end + 2,
        }),
        _ => Err(Malformed("v1: carriage return not followed by line feed")),
    }
}

/// Checks the v1 content between `PROXY ` and `\r\n`; `complete` says whether it is whole
/// (else it is a prefix, and its last field may still grow). The header when complete.
fn v1_fields(content: &[u8], complete: bool) -> Result<Option<Header>, ProxyHeaderError> {
    use ProxyHeaderError::Malformed;

    const PROTOCOLS: [&[u8]; 3] = [b"TCP4", b"TCP6", b"UNKNOWN"];
    const BAD_PROTOCOL: &str = "v1: protocol is not TCP4, TCP6 or UNKNOWN";

    let (protocol, rest) = match content.iter().position(|&b| b == b' ') {
        Some(space) => (&content[..space], Some(&content[space + 1..])),
        None => (content, None),
    };
    let Some(rest) = rest else {
        return match protocol {
            b"UNKNOWN" if complete => Ok(Some(Header::Local)),
            b"TCP4" | b"TCP6" if complete => Err(Malformed("v1: missing addresses and ports")),
            _ if complete => Err(Malformed(BAD_PROTOCOL)),
            _ if PROTOCOLS.iter().any(|p| p.starts_with(protocol)) => Ok(None),
            _ => Err(Malformed(BAD_PROTOCOL)),
        };
    };
    let v6 = match protocol {
        b"TCP4" => false,
        b"TCP6" => true,
        // Anything may follow UNKNOWN; the receiver uses the TCP peer.
        b"UNKNOWN" => return Ok(complete.then_some(Header::Local)),
        _ => return Err(Malformed(BAD_PROTOCOL)),
    };

    let count = rest.split(|&b| b == b' ').count();
    let (mut source, mut destination) = (None, None);
    let (mut source_port, mut destination_port) = (None, None);
    for (index, field) in rest.split(|&b| b == b' ').enumerate() {
        let partial = !complete && index + 1 == count;
        match index {
            0 => source = v1_address(field, v6, partial)?,
            1 => destination = v1_address(field, v6, partial)?,
            2 => source_port = v1_port(field, partial)?,
            3 => destination_port = v1_port(field, partial)?,
            _ => return Err(Malformed("v1: more than four fields after the protocol")),
        }
    }
    if complete && count < 4 {
        return Err(Malformed("v1: missing addresses or ports"));
    }
    Ok(match (source, destination, source_port, destination_port) {
        (Some(source), Some(destination), Some(source_port), Some(destination_port)) => {
            Some(Header::Proxied {
                source: SocketAddr::new(source, source_port),
                destination: SocketAddr::new(destination, destination_port),
            })
        }
        _ => None,
    })
}

/// A v1 address of the stated family; `None` while `partial` and still a valid prefix.
fn v1_address(field: &[u8], v6: bool, partial: bool) -> Result<Option<IpAddr>, ProxyHeaderError> {
    use ProxyHeaderError::Malformed;

    let wrong_family = if v6 {
        "v1: TCP6 with an IPv4 address"
    } else {
        "v1: TCP4 with an IPv6 address"
    };
    if partial {
        let (own, other) = if v6 {
            (ipv6_prefix(field), ipv4_prefix(field))
        } else {
            (ipv4_prefix(field), ipv6_prefix(field))
        };
        return match (own, other) {
            (true, _) => Ok(None),
            (false, true) => Err(Malformed(wrong_family)),
            (false, false) => Err(Malformed("v1: bad address")),
        };
    }
    let address = std::str::from_utf8(field)
        .ok()
        .and_then(|text| text.parse::<IpAddr>().ok())
        .ok_or(Malformed("v1: bad address"))?;
    if address.is_ipv6() == v6 {
        Ok(Some(address))
    } else {
        Err(Malformed(wrong_family))
    }
}

/// A v1 port: 1 to 5 decimal digits, at most 65535; `None` while `partial` and still valid.
fn v1_port(field: &[u8], partial: bool) -> Result<Option<u16>, ProxyHeaderError> {
    let bad = ProxyHeaderError::Malformed("v1: port is not a decimal number from 0 to 65535");
    if field.len() > 5 || !field.iter().all(u8::is_ascii_digit) || (field.is_empty() && !partial) {
        return Err(bad);
    }
    let value = field
        .iter()
        .fold(0u32, |value, digit| value * 10 + u32::from(digit - b'0'));
    let port = u16::try_from(value).map_err(|_| bad)?;
    Ok((!partial).then_some(port))
}

/// Whether `text` can still grow into a dotted-quad IPv4 address (as `Ipv4Addr` parses it:
/// no leading zeros).
fn ipv4_prefix(text: &[u8]) -> bool {
    let count = text.split(|&b| b == b'.').count();
    count <= 4
        && text
            .split(|&b| b == b'.')
            .enumerate()
            .all(|(index, octet)| {
                let last = index + 1 == count;
                match octet {
                    [] => last,
                    [b'0', _, ..] => false,
                    _ => {
                        octet.len() <= 3
                            && octet.iter().all(u8::is_ascii_digit)
                            && octet
                                .iter()
                                .fold(0u32, |value, digit| value * 10 + u32::from(digit - b'0'))
                                <= 255
                    }
                }
            })
}

/// Whether `text` can still grow into an IPv6 address as `Ipv6Addr` parses it. Checks the
/// structure (hex groups of at most four digits, at most one `::`, at most eight groups,
/// a dotted IPv4 tail only after a `:`); may let through a few prefixes no address has,
/// which the whole-field parse then rejects, but never refuses a real prefix.
fn ipv6_prefix(text: &[u8]) -> bool {
    if text.len() > IPV6_MAX_TEXT_LEN || text.windows(3).any(|w| w == b":::") {
        return false;
    }
    let double_colons = text.windows(2).filter(|w| *w == b"::").count();
    if double_colons > 1 || (text.first() == Some(&b':') && text.get(1).is_some_and(|&b| b != b':'))
    {
        return false;
    }
    let count = text.split(|&b| b == b':').count();
    let mut explicit_groups = 0;
    for (index, group) in text.split(|&b| b == b':').enumerate() {
        if group.contains(&b'.') {
            if index == 0 || index + 1 != count || !ipv4_prefix(group) {
                return false;
            }
            explicit_groups += 2;
        } else if group.len() > 4 || !group.iter().all(u8::is_ascii_hexdigit) {
            return false;
        } else if !group.is_empty() || double_colons == 0 {
            explicit_groups += 1;
        }
    }
    // `::` stands for at least one group.
    explicit_groups <= if double_colons == 0 { 8 } else { 7 }
}

#[cfg(test)]
mod tests;
