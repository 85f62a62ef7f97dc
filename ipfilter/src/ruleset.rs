//! [`RuleSet`]: the rules of one or more security groups, compiled for fast lookups.

use std::fmt;
use std::net::IpAddr;

use crate::table::{Block, Table};
use crate::{Rule, Source, normalize};

/// Inbound rules compiled for lookups in O(log n) time without allocating.
///
/// Each address family is cut into segments of addresses that the same rules cover, and each
/// segment points at a sorted list of the port ranges those rules allow. With n rules, a lookup
/// is a bucket index on the top 16 bits of the address, a binary search among the segments of
/// that bucket and one among the segment's ranges. Memory stays linear in n however many rules
/// overlap (see the `portlist` module).
///
/// An empty set allows nothing; whether an endpoint with no security group is open is the
/// caller's decision.
///
/// ```
/// use ipfilter::{PortRange, Rule, RuleSet};
///
/// let web = [Rule { ports: "443".parse()?, source: "10.0.0.0/8".parse()? }];
/// let admin = [Rule { ports: PortRange::ALL, source: "192.0.2.7".parse()? }];
/// // Several groups attached to one endpoint: the union of their rules.
/// let set = RuleSet::compile(web.into_iter().chain(admin));
/// assert!(set.allows("10.1.2.3".parse()?, 443));
/// assert!(set.allows("::ffff:10.1.2.3".parse()?, 443));
/// assert!(!set.allows("10.1.2.3".parse()?, 80));
/// assert!(set.allows("192.0.2.7".parse()?, 80));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RuleSet {
    rules: usize,
    v4: Table<u32>,
    v6: Table<u128>,
}

impl RuleSet {
    /// Compiles rules, for instance those of every security group attached to an endpoint.
    pub fn compile(rules: impl IntoIterator<Item = Rule>) -> RuleSet {
        let mut rules_seen = 0;
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for rule in rules {
            rules_seen += 1;
            let (lo, hi) = (rule.ports.lo(), rule.ports.hi());
            match rule.source {
                Source::Any => {
                    v4.push(Block {
                        start: 0,
                        prefix: 0,
                        lo,
                        hi,
                    });
                    v6.push(Block {
                        start: 0,
                        prefix: 0,
                        lo,
                        hi,
                    });
                }
                // A `Cidr` is normalized: IPv4-mapped blocks are IPv4 and host bits are clear.
                Source::Cidr(cidr) => match cidr.network() {
                    IpAddr::V4(network) => v4.push(Block {
                        start: u32::from(network),
                        prefix: cidr.prefix(),
                        lo,
                        hi,
                    }),
                    IpAddr::V6(network) => v6.push(Block {
                        start: u128::from(network),
                        prefix: cidr.prefix(),
                        lo,
                        hi,
                    }),
                },
            }
        }
        RuleSet {
            rules: rules_seen,
            v4: Table::compile(v4),
            v6: Table::compile(v6),
        }
    }

    /// Whether a rule allows a client at `addr` to reach `port`. The address is normalized
    /// first, so an IPv4 client on a dual-stack listener (`::ffff:a.b.c.d`) matches IPv4 rules.
    pub fn allows(&self, addr: IpAddr, port: u16) -> bool {
        match normalize(addr) {
            IpAddr::V4(v4) => self.v4.allows(u32::from(v4), port),
            IpAddr::V6(v6) => self.v6.allows(u128::from(v6), port),
        }
    }

    /// Number of rules compiled, duplicates included.
    pub fn len(&self) -> usize {
        self.rules
    }

    /// Whether no rule was compiled (the set allows nothing).
    pub fn is_empty(&self) -> bool {
        self.rules == 0
    }
}

impl Default for RuleSet {
    /// The empty set, which allows nothing.
    fn default() -> RuleSet {
        RuleSet::compile([])
    }
}

impl FromIterator<Rule> for RuleSet {
    fn from_iter<I: IntoIterator<Item = Rule>>(rules: I) -> RuleSet {
        RuleSet::compile(rules)
    }
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules)
            .field("ipv4", &self.v4)
            .field("ipv6", &self.v6)
            .finish()
    }
}

#[cfg(test)]
mod tests;
