//! Sources of security-group rules: `any`, single addresses and CIDR blocks.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a source, address or port range could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text is empty.
    #[error("empty value")]
    Empty,
    /// The address part is neither IPv4 nor IPv6.
    #[error("`{0}` is not an IPv4 or IPv6 address")]
    Address(String),
    /// The prefix length is not a number or is longer than the address.
    #[error("prefix length `{prefix}` is invalid for {family} (0..={max})")]
    Prefix {
        /// The prefix as written.
        prefix: String,
        /// "IPv4" or "IPv6".
        family: &'static str,
        /// The longest prefix for the family.
        max: u8,
    },
    /// A port or port range that is not `N`, `LO-HI` or `all`.
    #[error("`{0}` is not a port, a port range `low-high` or `all`")]
    Port(String),
    /// A port range whose bounds are reversed or out of range.
    #[error("port range {lo}-{hi} is invalid (1..=65535, low <= high)")]
    PortRange {
        /// Low bound as written.
        lo: u32,
        /// High bound as written.
        hi: u32,
    },
}

/// A CIDR block, stored normalized: IPv4 blocks written in IPv4-mapped IPv6 form become IPv4,
/// and host bits are cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Builds a block from an address and prefix length, clearing host bits and mapping
    /// IPv4-mapped and IPv4-compatible IPv6 blocks to IPv4.
    ///
    /// The family is decided on the network address (host bits already cleared), so a block
    /// is converted only when every address in it normalizes to IPv4: `::ffff:0:0/96` is
    /// `0.0.0.0/0`, `::10.0.0.0/104` is `10.0.0.0/8`, but `::/96` and `::2.0.0.1/96` both stay
    /// the IPv6 block `::/96`, which then only matches IPv6 clients (see [`normalize`]).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, ParseError> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(ParseError::Prefix {
                prefix: prefix.to_string(),
                family: family(addr),
                max,
            });
        }
        let network = match mask(addr, prefix) {
            IpAddr::V6(v6) if prefix >= 96 => match v4_embedded(v6) {
                Some(v4) => {
                    return Ok(Cidr {
                        network: IpAddr::V4(v4),
                        prefix: prefix - 96,
                    });
                }
                None => IpAddr::V6(v6),
            },
            network => network,
        };
        Ok(Cidr { network, prefix })
    }

    /// Parses `a.b.c.d/n`, `x::y/n` or a single address, and says whether host bits were set
    /// (the block is accepted and normalized; the caller may warn).
    pub fn parse_with_warning(text: &str) -> Result<(Cidr, bool), ParseError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ParseError::Empty);
        }
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| ParseError::Address(addr_text.to_string()))?;
        let prefix = match prefix_text {
            None => max_prefix(addr),
            // Digits only: `u8::from_str` would also take `+8`.
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|n| *n <= max_prefix(addr))
                .ok_or_else(|| ParseError::Prefix {
                    prefix: p.to_string(),
                    family: family(addr),
                    max: max_prefix(addr),
                })?,
        };
        let cidr = Cidr::new(addr, prefix)?;
        Ok((cidr, mask(addr, prefix) != addr))
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `addr` (normalized first) lies in this block.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = normalize(addr);
        addr.is_ipv4() == self.network.is_ipv4() && mask(addr, self.prefix) == self.network
    }
}

impl FromStr for Cidr {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Cidr, ParseError> {
        Cidr::parse_with_warning(text).map(|(cidr, _)| cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The source of an inbound rule: any address, or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Every address, IPv4 and IPv6.
    Any,
    /// One block (a single address is a /32 or /128).
    Cidr(Cidr),
}

impl Source {
    /// Whether `addr` matches this source.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match self {
            Source::Any => true,
            Source::Cidr(cidr) => cidr.contains(addr),
        }
    }
}

impl FromStr for Source {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Source, ParseError> {
        if text.trim().eq_ignore_ascii_case("any") {
            Ok(Source::Any)
        } else {
            text.parse().map(Source::Cidr)
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Any => f.write_str("any"),
            Source::Cidr(cidr) => cidr.fmt(f),
        }
    }
}

/// Maps IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`) IPv6 addresses to
/// IPv4, so a rule written for IPv4 matches a client reaching a dual-stack listener.
///
/// IPv4-compatible means `::a.b.c.d` with `a.b` not `0.0`: the block `::/112` stays IPv6,
/// because it holds IPv6's own unspecified (`::`) and loopback (`::1`) addresses, which
/// `Ipv6Addr::to_ipv4` would wrongly turn into `0.0.0.0` and `0.0.0.1`.
pub fn normalize(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v4_embedded(v6).map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn v4_embedded(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = v6.segments();
    let [a, b, c, d, e, f, g, h] = segments;
    if [a, b, c, d, e] != [0; 5] {
        return None;
    }
    let v4 = Ipv4Addr::new((g >> 8) as u8, g as u8, (h >> 8) as u8, h as u8);
    match f {
        0xffff => Some(v4),
        // IPv4-compatible, except `::/112`, which holds `::` and `::1`. Cutting at a prefix
        // boundary means a block with its host bits cleared converts whole or not at all.
        0 if g != 0 => Some(v4),
        _ => None,
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn family(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u32::MAX << (32 - prefix))
            };
            IpAddr::V4(Ipv4Addr::from(kept))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u128::MAX << (128 - prefix))
            };
            IpAddr::V6(Ipv6Addr::from(kept))
        }
    }
}

#[cfg(test)]
mod tests;
