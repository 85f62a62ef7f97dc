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
    /// IPv4-mapped IPv6 blocks to IPv4.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, ParseError> {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v4_embedded(v6) {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        let max = max_prefix(addr);
        if prefix > max {
            return Err(ParseError::Prefix {
                prefix: prefix.to_string(),
                family: family(addr),
                max,
            });
        }
        Ok(Cidr {
            network: mask(addr, prefix),
            prefix,
        })
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
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max_prefix(addr))
                .ok_or_else(|| ParseError::Prefix {
                    prefix: p.to_string(),
                    family: family(addr),
                    max: max_prefix(addr),
                })?,
        };
        let cidr = Cidr::new(addr, prefix)?;
        let host_bits_set = normalize(addr) != cidr.network;
        Ok((cidr, host_bits_set))
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
        // IPv4-compatible, but `::` and `::1` are IPv6's own unspecified and loopback.
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
mod tests {
    use super::*;

    /// IPv4 and IPv6 blocks parse, and host bits are cleared with a warning flag.
    #[test]
    fn parses_and_normalizes_blocks() {
        let (cidr, warn) = Cidr::parse_with_warning("10.8.220.6/24").unwrap();
        assert_eq!(cidr.to_string(), "10.8.220.0/24");
        assert!(warn);
        let (cidr, warn) = Cidr::parse_with_warning("2001:db8::/32").unwrap();
        assert_eq!(cidr.to_string(), "2001:db8::/32");
        assert!(!warn);
        assert_eq!(
            "10.0.0.1".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.1/32"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
    }

    /// IPv4-mapped blocks and addresses are matched as IPv4: the dual-stack bypass is closed.
    #[test]
    fn mapped_forms_match_as_ipv4() {
        let cidr: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.0.0.0/8");
        let v4: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(v4.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(v4.contains("::10.1.2.3".parse().unwrap()));
        assert!(!v4.contains("11.0.0.1".parse().unwrap()));
        assert_eq!(
            normalize("::1".parse().unwrap()),
            "::1".parse::<IpAddr>().unwrap()
        );
    }

    /// Malformed sources are rejected with an error that names the problem.
    #[test]
    fn rejects_malformed_input() {
        assert_eq!("".parse::<Cidr>(), Err(ParseError::Empty));
        assert!(matches!(
            "10.0.0/8".parse::<Cidr>(),
            Err(ParseError::Address(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(ParseError::Prefix { .. })
        ));
        assert!(matches!(
            "::/129".parse::<Cidr>(),
            Err(ParseError::Prefix { .. })
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err(ParseError::Prefix { .. })
        ));
        assert_eq!("ANY".parse::<Source>(), Ok(Source::Any));
        assert!("anywhere".parse::<Source>().is_err());
    }
}
