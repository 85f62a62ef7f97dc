//! One inbound rule of a security group.

use std::fmt;

use crate::{PortRange, Source};

/// An inbound TCP rule: traffic from `source` to a port in `ports` is allowed.
///
/// A security group is a list of rules, and the groups attached to an endpoint allow the
/// union of their rules: compile all of them into one [`RuleSet`](crate::RuleSet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Listener ports the rule applies to.
    pub ports: PortRange,
    /// Client addresses the rule allows.
    pub source: Source,
}

impl Rule {
    /// Whether the rule allows `addr` (normalized first) on `port`: the linear-scan meaning
    /// that [`RuleSet::allows`](crate::RuleSet::allows) computes faster.
    pub fn allows(&self, addr: std::net::IpAddr, port: u16) -> bool {
        self.ports.contains(port) && self.source.contains(addr)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tcp {} from {}", self.ports, self.source)
    }
}
