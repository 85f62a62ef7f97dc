//! Unit tests of `RuleSet`: the edge cases of sources, ports and address forms.

use super::*;
use crate::PortRange;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn rule(ports: &str, source: &str) -> Rule {
    Rule {
        ports: ports.parse().unwrap(),
        source: source.parse().unwrap(),
    }
}

fn set(rules: &[(&str, &str)]) -> RuleSet {
    RuleSet::compile(rules.iter().map(|(ports, source)| rule(ports, source)))
}

/// An empty set allows nothing, and reports zero rules.
#[test]
fn empty_set_allows_nothing() {
    let empty = RuleSet::default();
    assert!(empty.is_empty());
    assert_eq!(empty.len(), 0);
    for addr in [
        "0.0.0.0",
        "10.0.0.1",
        "::",
        "::1",
        "::ffff:10.0.0.1",
        "2001:db8::1",
    ] {
        assert!(!empty.allows(ip(addr), 80), "{addr}");
    }
}

/// `/0` covers its whole family and only that family; `any` covers both.
#[test]
fn slash_zero_and_any() {
    let v4 = set(&[("80", "0.0.0.0/0")]);
    assert!(v4.allows(ip("0.0.0.0"), 80) && v4.allows(ip("255.255.255.255"), 80));
    assert!(v4.allows(ip("::ffff:1.2.3.4"), 80));
    assert!(!v4.allows(ip("2001:db8::1"), 80) && !v4.allows(ip("::1"), 80));

    let v6 = set(&[("80", "::/0")]);
    assert!(
        v6.allows(ip("::"), 80) && v6.allows(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 80)
    );
    assert!(!v6.allows(ip("1.2.3.4"), 80) && !v6.allows(ip("::ffff:1.2.3.4"), 80));

    let any = set(&[("all", "any")]);
    for addr in [
        "0.0.0.0",
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:1.2.3.4",
        "2001:db8::",
    ] {
        assert!(
            any.allows(ip(addr), 1) && any.allows(ip(addr), 65535),
            "{addr}"
        );
        assert!(
            !any.allows(ip(addr), 0),
            "{addr}: port 0 is never a listener port"
        );
    }
}

/// `/32` and `/128` match one address, not its neighbours.
#[test]
fn single_addresses() {
    let s = set(&[("443", "10.0.0.5/32"), ("443", "2001:db8::5")]);
    assert!(s.allows(ip("10.0.0.5"), 443) && s.allows(ip("2001:db8::5"), 443));
    for addr in ["10.0.0.4", "10.0.0.6", "2001:db8::4", "2001:db8::6"] {
        assert!(!s.allows(ip(addr), 443), "{addr}");
    }
    let edges = set(&[("1", "255.255.255.255"), ("1", "0.0.0.0"), ("1", "::")]);
    assert!(edges.allows(ip("255.255.255.255"), 1) && edges.allows(ip("0.0.0.0"), 1));
    assert!(edges.allows(ip("::"), 1) && !edges.allows(ip("::1"), 1));
    assert!(!edges.allows(ip("255.255.255.254"), 1) && !edges.allows(ip("0.0.0.1"), 1));
}

/// Port bounds are inclusive at 1 and 65535 and at a range's own ends.
#[test]
fn port_edges() {
    let s = set(&[
        ("1", "10.0.0.0/8"),
        ("65535", "10.0.0.0/8"),
        ("8000-8100", "10.0.0.0/8"),
    ]);
    let addr = ip("10.1.1.1");
    for port in [1, 65535, 8000, 8050, 8100] {
        assert!(s.allows(addr, port), "{port}");
    }
    for port in [0, 2, 65534, 7999, 8101] {
        assert!(!s.allows(addr, port), "{port}");
    }
}

/// Overlapping and nested rules allow the union of their ports, each on its own block.
#[test]
fn overlapping_rules() {
    let s = set(&[
        ("80", "10.0.0.0/8"),
        ("443", "10.1.0.0/16"),
        ("8000-8010", "10.1.2.0/24"),
        ("8005-8020", "10.1.2.0/24"),
        ("22", "10.1.2.3"),
        ("80", "10.1.0.0/16"),
    ]);
    let inner = ip("10.1.2.3");
    for port in [22, 80, 443, 8000, 8015, 8020] {
        assert!(s.allows(inner, port), "{port}");
    }
    assert!(!s.allows(inner, 8021) && !s.allows(ip("10.1.2.4"), 22));
    assert!(s.allows(ip("10.1.255.255"), 443) && !s.allows(ip("10.2.0.0"), 443));
    assert!(s.allows(ip("10.255.255.255"), 80) && !s.allows(ip("11.0.0.0"), 80));
    assert_eq!(s.len(), 6);
}

/// An IPv4 rule matches an IPv4 client seen on a dual-stack listener, in mapped or
/// compatible form, and a rule written in mapped form is an IPv4 rule.
#[test]
fn ipv4_rule_and_mapped_client() {
    let s = set(&[("443", "192.0.2.0/24")]);
    assert!(s.allows(ip("::ffff:192.0.2.9"), 443));
    assert!(s.allows(ip("::192.0.2.9"), 443));
    assert!(!s.allows(ip("::ffff:192.0.3.9"), 443));
    let mapped = set(&[("443", "::ffff:192.0.2.0/120")]);
    assert!(mapped.allows(ip("192.0.2.9"), 443) && mapped.allows(ip("::ffff:192.0.2.9"), 443));
    assert!(!mapped.allows(ip("192.0.3.0"), 443));
}

/// IPv6 rules on `::`, `::1` and `::/96` look IPv4-compatible but stay IPv6: they match
/// those IPv6 clients and never an IPv4 client.
#[test]
fn ipv6_rule_that_looks_ipv4_compatible() {
    let s = set(&[("80", "::1"), ("81", "::/128"), ("82", "::/96")]);
    assert!(s.allows(ip("::1"), 80) && s.allows(ip("::"), 81) && s.allows(ip("::1"), 82));
    for v4 in ["0.0.0.1", "0.0.0.0", "::ffff:0.0.0.1"] {
        for port in [80, 81, 82] {
            assert!(!s.allows(ip(v4), port), "{v4} on {port}");
        }
    }
    // `::10.0.0.1` is IPv4-compatible: the client is 10.0.0.1, outside the IPv6 `::/96`.
    assert!(!s.allows(ip("::10.0.0.1"), 82));
    let compat = set(&[("80", "::10.0.0.0/104")]);
    assert!(compat.allows(ip("10.9.9.9"), 80) && compat.allows(ip("::10.9.9.9"), 80));
}

/// Rules of several groups compile into one set that allows their union.
#[test]
fn union_of_groups() {
    let web = [rule("443", "10.0.0.0/8")];
    let ops = [rule("22", "192.0.2.7"), rule("all", "2001:db8::/32")];
    let s: RuleSet = web.iter().chain(ops.iter()).copied().collect();
    assert!(s.allows(ip("10.0.0.1"), 443) && s.allows(ip("192.0.2.7"), 22));
    assert!(s.allows(ip("2001:db8:1::"), 9) && !s.allows(ip("192.0.2.7"), 443));
    assert_eq!(s.len(), 3);
    assert!(!s.is_empty());
}

/// Many single ports on nested blocks (lists too long to copy inward) still all match.
#[test]
fn long_port_lists_on_nested_blocks() {
    let mut rules = Vec::new();
    for port in 1..=100u32 {
        rules.push(Rule {
            ports: PortRange::new(port * 2, port * 2).unwrap(),
            source: "10.0.0.0/8".parse().unwrap(),
        });
        rules.push(Rule {
            ports: PortRange::new(port * 2 + 1000, port * 2 + 1000).unwrap(),
            source: format!("10.{port}.0.0/16").parse().unwrap(),
        });
    }
    rules.push(rule("5000", "10.7.7.7"));
    let s = RuleSet::compile(rules);
    let inner = ip("10.7.7.7");
    assert!(s.allows(inner, 5000) && s.allows(inner, 200) && s.allows(inner, 1014));
    assert!(!s.allows(inner, 201) && !s.allows(inner, 1016) && !s.allows(inner, 5001));
    assert!(s.allows(ip("10.7.0.0"), 1014) && !s.allows(ip("10.8.0.0"), 1014));
    assert!(!s.allows(ip("11.0.0.0"), 200));
}

/// Debug shows the rule count and the size of each family's tables.
#[test]
fn debug_summarizes() {
    let s = set(&[("80", "10.0.0.0/8"), ("80", "2001:db8::/32")]);
    let shown = format!("{s:?}");
    assert!(
        shown.starts_with("RuleSet { rules: 2, ipv4: Table { segments: 3"),
        "{shown}"
    );
}
