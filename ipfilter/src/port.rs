//! Port ranges of inbound rules.

use std::fmt;
use std::str::FromStr;

use crate::ParseError;

/// An inclusive range of TCP ports; a single port is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

impl PortRange {
    /// Every port, 1 to 65535.
    pub const ALL: PortRange = PortRange {
        lo: 1,
        hi: u16::MAX,
    };

    /// A range from `lo` to `hi` inclusive; both in 1..=65535 and `lo <= hi`.
    pub fn new(lo: u32, hi: u32) -> Result<PortRange, ParseError> {
        let in_range = |p: u32| (1..=u32::from(u16::MAX)).contains(&p);
        if !in_range(lo) || !in_range(hi) || lo > hi {
            return Err(ParseError::PortRange { lo, hi });
        }
        // Both bounds were just checked to fit in u16.
        Ok(PortRange {
            lo: lo as u16,
            hi: hi as u16,
        })
    }

    /// The lowest port of the range.
    pub fn lo(&self) -> u16 {
        self.lo
    }

    /// The highest port of the range.
    pub fn hi(&self) -> u16 {
        self.hi
    }

    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl FromStr for PortRange {
    type Err = ParseError;

    /// Parses `443`, `8000-8100` or `all` (case-insensitive), the forms [`Display`] writes
    /// plus `all`.
    ///
    /// [`Display`]: fmt::Display
    fn from_str(text: &str) -> Result<PortRange, ParseError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ParseError::Empty);
        }
        if text.eq_ignore_ascii_case("all") {
            return Ok(PortRange::ALL);
        }
        // Digits only: `u32::from_str` would also take `+80`.
        let number = |part: &str| {
            let part = part.trim();
            Some(part)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u32>().ok())
                .ok_or_else(|| ParseError::Port(text.to_string()))
        };
        let (lo, hi) = match text.split_once('-') {
            Some((lo, hi)) => (number(lo)?, number(hi)?),
            None => {
                let port = number(text)?;
                (port, port)
            }
        };
        PortRange::new(lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ranges accept 1..=65535 in order and reject zero, reversed and oversized bounds.
    #[test]
    fn validates_bounds() {
        assert!(PortRange::new(8000, 8100).unwrap().contains(8050));
        assert!(!PortRange::new(8000, 8100).unwrap().contains(8101));
        assert_eq!(PortRange::new(443, 443).unwrap().to_string(), "443");
        assert!(PortRange::new(0, 10).is_err());
        assert!(PortRange::new(10, 9).is_err());
        assert!(PortRange::new(1, 65536).is_err());
    }

    /// `N`, `LO-HI` and `all` parse; what `Display` writes parses back to the same range.
    #[test]
    fn parses_and_round_trips() {
        let parse = |text: &str| text.parse::<PortRange>();
        assert_eq!(parse("443"), PortRange::new(443, 443));
        assert_eq!(parse(" 8000 - 8100 "), PortRange::new(8000, 8100));
        assert_eq!(parse("ALL"), Ok(PortRange::ALL));
        assert_eq!(parse("1-65535"), Ok(PortRange::ALL));
        assert_eq!(parse("65535"), PortRange::new(65535, 65535));
        for range in [PortRange::ALL, PortRange::new(1, 1).unwrap()] {
            assert_eq!(parse(&range.to_string()), Ok(range));
        }
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert_eq!(parse("0"), Err(ParseError::PortRange { lo: 0, hi: 0 }));
        assert_eq!(
            parse("90-80"),
            Err(ParseError::PortRange { lo: 90, hi: 80 })
        );
        assert_eq!(
            parse("65536"),
            Err(ParseError::PortRange {
                lo: 65536,
                hi: 65536
            })
        );
        for bad in [
            "+80",
            "80-",
            "-80",
            "80-90-100",
            "http",
            "99999999999",
            "8 0",
        ] {
            assert!(matches!(parse(bad), Err(ParseError::Port(_))), "{bad}");
        }
    }
}
