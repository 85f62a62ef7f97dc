//! CIDR rule sets for Portico's security groups.
//!
//! Pure, synchronous code with no I/O: parsing of sources (`any`, single addresses, IPv4 and
//! IPv6 CIDRs) and of port ranges, with the normalization that closes the classic dual-stack
//! bypass (IPv4-mapped and IPv4-compatible IPv6 forms are matched as IPv4).
//!
//! Layout:
//! - `cidr`: [`Cidr`], [`Source`] and address normalization.
//! - `port`: [`PortRange`].

mod cidr;
mod port;

pub use cidr::{Cidr, ParseError, Source, normalize};
pub use port::PortRange;
