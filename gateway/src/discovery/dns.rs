//! A small DNS client: the A and AAAA records of one name, asked of one server over UDP
//! (with EDNS0, so that a few hundred addresses fit in one answer). Enough to follow the
//! workers behind a headless service or any name that lists them; no search domains, no
//! caching (the caller asks again every few seconds).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

/// How long one question waits for its answer (it is asked twice).
const WAIT: Duration = Duration::from_secs(2);
/// The UDP payload size advertised with EDNS0.
const PAYLOAD: u16 = 4096;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;

/// Why a name could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The server could not be reached or did not answer.
    #[error("DNS server {server}: {error}")]
    Io {
        /// The server asked.
        server: SocketAddr,
        /// What failed.
        error: io::Error,
    },
    /// The answer was not a DNS answer to the question.
    #[error("DNS server {server}: {reason}")]
    Malformed {
        /// The server asked.
        server: SocketAddr,
        /// What was wrong.
        reason: &'static str,
    },
    /// The server failed (SERVFAIL, REFUSED…).
    #[error("DNS server {server} answered rcode {rcode} for {name}")]
    Failed {
        /// The server asked.
        server: SocketAddr,
        /// The name asked for.
        name: String,
        /// The response code.
        rcode: u8,
    },
    /// No server is configured and `/etc/resolv.conf` names none.
    #[error("no DNS server: set dns_server, or list a nameserver in /etc/resolv.conf")]
    NoServer,
}

/// The addresses of `name` (A and AAAA records), sorted; empty when the name does not
/// exist or has none. One of the two questions may fail (some servers refuse the type a
/// name has no record of); both failing is an error.
pub async fn resolve(name: &str, server: SocketAddr) -> Result<Vec<IpAddr>, DnsError> {
    let (v4, v6) = tokio::join!(ask(name, TYPE_A, server), ask(name, TYPE_AAAA, server));
    let mut addresses = match (v4, v6) {
        (Ok(mut v4), Ok(v6)) => {
            v4.extend(v6);
            v4
        }
        (Ok(only), Err(_)) | (Err(_), Ok(only)) => only,
        (Err(err), Err(_)) => return Err(err),
    };
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

/// The first `nameserver` of `/etc/resolv.conf`, on port 53.
pub fn system_server() -> Result<SocketAddr, DnsError> {
    let text = std::fs::read_to_string("/etc/resolv.conf").map_err(|_| DnsError::NoServer)?;
    first_nameserver(&text).ok_or(DnsError::NoServer)
}

fn first_nameserver(text: &str) -> Option<SocketAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        // A link-local IPv6 server carries a zone (`%eth0`) that SocketAddr cannot hold.
        .find_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
}

async fn ask(name: &str, qtype: u16, server: SocketAddr) -> Result<Vec<IpAddr>, DnsError> {
    let io = |error| DnsError::Io { server, error };
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(server).await.map_err(io)?;
    let id: u16 = rand::random();
    let question = query(id, name, qtype);
    let mut buffer = vec![0u8; usize::from(PAYLOAD)];
    let mut last = io::Error::new(io::ErrorKind::TimedOut, "no answer");
    for _ in 0..2 {
        socket.send(&question).await.map_err(io)?;
        match tokio::time::timeout(WAIT, socket.recv(&mut buffer)).await {
            Ok(Ok(len)) => {
                return parse(&buffer[..len], id, qtype).map_err(|failure| match failure {
                    Failure::Malformed(reason) => DnsError::Malformed { server, reason },
                    Failure::Rcode(rcode) => DnsError::Failed {
                        server,
                        name: name.to_string(),
                        rcode,
                    },
                });
            }
            Ok(Err(err)) => last = err,
            Err(_) => {}
        }
    }
    Err(io(last))
}

/// A recursive query for `name`/`qtype`, with an EDNS0 record.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]); // 1 question, 1 additional
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes()); // IN
    // OPT: root name, type 41, class = payload size, TTL 0, no options.
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&PAYLOAD.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    out
}

enum Failure {
    Malformed(&'static str),
    Rcode(u8),
}

/// The addresses of type `qtype` in the answer section of `packet`.
fn parse(packet: &[u8], id: u16, qtype: u16) -> Result<Vec<IpAddr>, Failure> {
    let malformed = Failure::Malformed;
    let u16_at = |at: usize| -> Result<u16, Failure> {
        packet
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(Failure::Malformed("truncated packet"))
    };
    if u16_at(0)? != id {
        return Err(malformed("answer to another question"));
    }
    let flags = u16_at(2)?;
    if flags & 0x8000 == 0 {
        return Err(malformed("not a response"));
    }
    match (flags & 0x000f) as u8 {
        0 => {}
        3 => return Ok(Vec::new()), // NXDOMAIN: no such name, no workers.
        rcode => return Err(Failure::Rcode(rcode)),
    }
    let questions = u16_at(4)?;
    let answers = u16_at(6)?;
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(packet, at)? + 4;
    }
    let mut found = Vec::new();
    for _ in 0..answers {
        at = skip_name(packet, at)?;
        let rtype = u16_at(at)?;
        let length = usize::from(u16_at(at + 8)?);
        let data = packet
            .get(at + 10..at + 10 + length)
            .ok_or(malformed("truncated record"))?;
        at += 10 + length;
        match (rtype, data.len()) {
            (TYPE_A, 4) if rtype == qtype => {
                found.push(IpAddr::from(<[u8; 4]>::try_from(data).unwrap_or_default()));
            }
            (TYPE_AAAA, 16) if rtype == qtype => {
                found.push(IpAddr::from(<[u8; 16]>::try_from(data).unwrap_or_default()));
            }
            // CNAMEs on the way, other types: the addresses follow.
            _ => {}
        }
    }
    Ok(found)
}

/// The position after the (possibly compressed) name at `at`.
fn skip_name(packet: &[u8], mut at: usize) -> Result<usize, Failure> {
    loop {
        let len = *packet.get(at).ok_or(Failure::Malformed("truncated name"))?;
        match len {
            0 => return Ok(at + 1),
            // A pointer ends the name where it stands.
            l if l & 0xc0 == 0xc0 => return Ok(at + 2),
            l if l & 0xc0 == 0 => at += 1 + usize::from(l),
            _ => return Err(Failure::Malformed("bad label")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer with a compressed name, a CNAME and two A records yields the two addresses.
    #[test]
    fn parses_addresses_out_of_an_answer() {
        let question = query(0x1234, "workers.test", TYPE_A);
        let mut packet = question[..question.len() - 11].to_vec();
        packet[2] = 0x81; // QR, RD
        packet[3] = 0x80; // RA, rcode 0
        packet[7] = 3; // three answers
        packet[11] = 0; // no additional record
        // CNAME workers.test → x (pointer to the question's name at 12).
        packet.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 3, 1, b'x', 0]);
        for last in [7, 8] {
            packet.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, last]);
        }
        let found = parse(&packet, 0x1234, TYPE_A).ok().unwrap();
        assert_eq!(
            found,
            vec![
                "10.0.0.7".parse::<IpAddr>().unwrap(),
                "10.0.0.8".parse().unwrap()
            ]
        );
        assert!(matches!(
            parse(&packet, 0x4321, TYPE_A),
            Err(Failure::Malformed(_))
        ));
        assert!(matches!(
            parse(&packet[..30], 0x1234, TYPE_A),
            Err(Failure::Malformed(_))
        ));
        packet[3] = 0x83; // NXDOMAIN
        assert!(parse(&packet, 0x1234, TYPE_A).ok().unwrap().is_empty());
        packet[3] = 0x82; // SERVFAIL
        assert!(matches!(
            parse(&packet, 0x1234, TYPE_A),
            Err(Failure::Rcode(2))
        ));
    }

    /// The first parsable nameserver of resolv.conf, port 53.
    #[test]
    fn reads_the_first_nameserver() {
        let text = "# comment\nsearch example\nnameserver fe80::1%eth0x\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n";
        assert_eq!(first_nameserver(text), Some("10.0.0.2:53".parse().unwrap()));
        assert_eq!(first_nameserver("search x\n"), None);
    }
}
