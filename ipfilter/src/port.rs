//! Port ranges of inbound rules.

use std::fmt;

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
}
