//! CIDR rule sets for Portico's security groups.
//!
//! Pure, synchronous code with no I/O: parsing of sources (`any`, single addresses, IPv4 and
//! IPv6 CIDRs) and of port ranges, with the normalization that closes the classic dual-stack
//! bypass (IPv4-mapped and IPv4-compatible IPv6 forms are matched as IPv4), and [`RuleSet`],
//! the inbound rules of the security groups attached to an endpoint compiled for lookups that
//! take tens of nanoseconds and never allocate.
//!
//! Layout:
//! - `cidr`: [`Cidr`], [`Source`] and address normalization.
//! - `port`: [`PortRange`].
//! - `rule`: [`Rule`], one inbound rule.
//! - `ruleset`: [`RuleSet`], rules compiled per address family.
//! - `table`: one family's address segments and their bucket index.
//! - `portlist`: the sorted port-range lists that segments point at.
//! - `key`: IPv4 and IPv6 addresses as integers, so `table` is written once.
//!
//! Beyond unit tests: `tests/` checks [`RuleSet`] against a linear scan with proptest,
//! `benches/lookup.rs` measures lookups and compiling (figures in
//! `docs/benchmarks-ipfilter.md`), and `fuzz/` holds a cargo-fuzz target for the parsers
//! (`fuzz/README.md` says how to run it).

mod cidr;
mod key;
mod port;
mod portlist;
mod rule;
mod ruleset;
mod table;

pub use cidr::{Cidr, ParseError, Source, normalize};
pub use port::PortRange;
pub use rule::Rule;
pub use ruleset::RuleSet;
