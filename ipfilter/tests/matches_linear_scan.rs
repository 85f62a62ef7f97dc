//! Property tests: a compiled `RuleSet` answers exactly like a linear scan of its rules.
//!
//! Random rule sets are drawn from small pools of addresses and ports, so that blocks nest,
//! overlap and touch, and ranges overlap and abut. Probe addresses are biased towards rule
//! boundaries (network, broadcast, one before, one after) and written as IPv4, IPv6, or the
//! IPv4-mapped and IPv4-compatible IPv6 forms; probe ports towards range ends (±1) and 0, 1 and
//! 65535. 10,000 cases in total.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipfilter::{Cidr, PortRange, Rule, RuleSet, Source};
use proptest::prelude::*;
use proptest::sample::{Index, select};

/// Network addresses that rules and probes cluster around.
const V4_BASES: [u32; 6] = [
    0x0000_0000, // 0.0.0.0
    0x0a00_0000, // 10.0.0.0
    0x0a01_0200, // 10.1.2.0
    0x0a01_0280, // 10.1.2.128
    0xc0a8_0000, // 192.168.0.0
    0xffff_ff00, // 255.255.255.0
];

const V6_BASES: [u128; 7] = [
    0,                                         // ::, with ::1 and ::/112 next to it
    0x0000_0000_0000_0000_0000_0000_0a00_0000, // ::10.0.0.0, IPv4-compatible
    0x0000_0000_0000_0000_0000_ffff_0000_0000, // ::ffff:0:0, IPv4-mapped
    0x2001_0db8_0000_0000_0000_0000_0000_0000, // 2001:db8::
    0x2001_0db8_0000_0000_0000_0000_0000_ff00, // 2001:db8::ff00
    0xfe80_0000_0000_0000_0000_0000_0000_0000, // fe80::
    u128::MAX << 8,                            // ffff:…:ff00
];

const PORTS: [u16; 10] = [1, 2, 22, 79, 80, 81, 443, 8000, 65534, 65535];

/// An address near a pool entry: the base with up to `spread` low bits changed.
fn near(bases: &'static [u128], spread: u32) -> impl Strategy<Value = u128> {
    (select(bases), any::<u128>(), 0..=spread)
        .prop_map(|(base, noise, bits)| base ^ (noise & low_mask(bits)))
}

fn low_mask(bits: u32) -> u128 {
    u128::MAX.checked_shr(128 - bits).unwrap_or(0)
}

fn v4_cidr() -> impl Strategy<Value = Cidr> {
    let bases: &'static [u128] = Box::leak(V4_BASES.map(u128::from).into());
    (near(bases, 12), prop_oneof![0..=32u8, 22..=32u8]).prop_map(|(addr, prefix)| {
        Cidr::new(IpAddr::V4(Ipv4Addr::from(addr as u32)), prefix).unwrap()
    })
}

fn v6_cidr() -> impl Strategy<Value = Cidr> {
    (
        near(&V6_BASES, 40),
        prop_oneof![0..=128u8, 90..=128u8, 110..=128u8],
    )
        .prop_map(|(addr, prefix)| Cidr::new(IpAddr::V6(Ipv6Addr::from(addr)), prefix).unwrap())
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![3 => select(&PORTS[..]), 1 => 1..=u16::MAX]
}

fn ports() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        4 => port().prop_map(|p| PortRange::new(p.into(), p.into()).unwrap()),
        4 => (port(), port()).prop_map(|(a, b)| {
            PortRange::new(a.min(b).into(), a.max(b).into()).unwrap()
        }),
        1 => Just(PortRange::ALL),
    ]
}

fn rules(source: impl Strategy<Value = Source>, max: usize) -> impl Strategy<Value = Vec<Rule>> {
    prop::collection::vec(
        (ports(), source).prop_map(|(ports, source)| Rule { ports, source }),
        0..=max,
    )
}

fn v4_source() -> impl Strategy<Value = Source> {
    prop_oneof![12 => v4_cidr().prop_map(Source::Cidr), 1 => Just(Source::Any)]
}

fn v6_source() -> impl Strategy<Value = Source> {
    prop_oneof![12 => v6_cidr().prop_map(Source::Cidr), 1 => Just(Source::Any)]
}

fn mixed_source() -> impl Strategy<Value = Source> {
    prop_oneof![
        6 => v4_cidr().prop_map(Source::Cidr),
        6 => v6_cidr().prop_map(Source::Cidr),
        1 => Just(Source::Any),
    ]
}

/// Many rules on a few nested blocks, mostly with single ports: port lists grow longer than
/// what nested blocks copy, so lookups follow links to the outer blocks' lists.
fn crowded_rules() -> impl Strategy<Value = Vec<Rule>> {
    let base = prop_oneof![
        near(&[0x0a01_0203], 8).prop_map(|a| IpAddr::V4(Ipv4Addr::from(a as u32))),
        near(&V6_BASES, 16).prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ];
    let chain = (base, prop::collection::vec(0..=128u8, 1..=6)).prop_map(|(base, prefixes)| {
        let max = if base.is_ipv4() { 32 } else { 128 };
        prefixes
            .into_iter()
            .map(|p| Source::Cidr(Cidr::new(base, p % (max + 1)).unwrap()))
            .collect::<Vec<_>>()
    });
    let single = (1..=u16::MAX).prop_map(|p| PortRange::new(p.into(), p.into()).unwrap());
    let ports = prop_oneof![3 => single, 1 => ports()];
    // Per block a few rules or many, so that a block with one range sits inside one with
    // dozens.
    let count = prop_oneof![0..=3usize, 10..=40usize];
    chain.prop_flat_map(move |blocks| {
        blocks
            .into_iter()
            .map(|source| {
                let ports = ports.clone();
                count
                    .clone()
                    .prop_flat_map(move |n| prop::collection::vec(ports.clone(), n))
                    .prop_map(move |ports| {
                        ports
                            .into_iter()
                            .map(|ports| Rule { ports, source })
                            .collect::<Vec<_>>()
                    })
            })
            .collect::<Vec<_>>()
            .prop_map(|groups| groups.concat())
    })
}

/// How to turn random numbers into a probe once the rules are known.
#[derive(Debug, Clone)]
struct Probe {
    rule: Index,
    edge: u8,
    form: u8,
    noise: u128,
    port_kind: u8,
    port: u16,
}

fn probe() -> impl Strategy<Value = Probe> {
    (
        any::<Index>(),
        0..8u8,
        0..4u8,
        any::<u128>(),
        0..8u8,
        any::<u16>(),
    )
        .prop_map(|(rule, edge, form, noise, port_kind, port)| Probe {
            rule,
            edge,
            form,
            noise,
            port_kind,
            port,
        })
}

/// (first, last, is IPv4) of the block a source covers; `any` is picked per family by `pick`.
fn bounds(source: &Source, pick: bool) -> (u128, u128, bool) {
    let (network, prefix) = match source {
        Source::Any if pick => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        Source::Any => (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        Source::Cidr(cidr) => (cidr.network(), cidr.prefix()),
    };
    match network {
        IpAddr::V4(v4) => {
            let first = u128::from(u32::from(v4));
            (first, first | low_mask(32 - u32::from(prefix)), true)
        }
        IpAddr::V6(v6) => {
            let first = u128::from(v6);
            (first, first | low_mask(128 - u32::from(prefix)), false)
        }
    }
}

/// The concrete address and port of a probe against `rules`.
fn realize(rules: &[Rule], probe: &Probe) -> (IpAddr, u16) {
    let rule = (!rules.is_empty()).then(|| rules[probe.rule.index(rules.len())]);
    let (first, last, v4) = match rule {
        Some(rule) => bounds(&rule.source, probe.noise & 1 == 0),
        None => (0, u128::MAX, probe.noise & 1 == 0),
    };
    let addr = match probe.edge {
        0 => first,
        1 => last,
        2 => first.wrapping_sub(1),
        3 => last.wrapping_add(1),
        4 => first ^ (probe.noise & 0xff),
        5 => probe.noise,
        6 => [0, 1, u128::from(u32::MAX)][(probe.noise % 3) as usize],
        _ => probe.noise >> 96,
    };
    let addr = if v4 {
        let v4 = Ipv4Addr::from(addr as u32);
        match probe.form {
            0 | 1 => IpAddr::V4(v4),
            2 => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => IpAddr::V6(v4.to_ipv6_compatible()),
        }
    } else {
        IpAddr::V6(Ipv6Addr::from(addr))
    };
    let (lo, hi) = rule.map_or((1, u16::MAX), |r| (r.ports.lo(), r.ports.hi()));
    let port = match probe.port_kind {
        0 => lo,
        1 => hi,
        2 => lo.wrapping_sub(1),
        3 => hi.wrapping_add(1),
        4 => [0, 1, u16::MAX][usize::from(probe.port % 3)],
        5 => PORTS[usize::from(probe.port) % PORTS.len()],
        _ => probe.port,
    };
    (addr, port)
}

fn check(rules: &[Rule], probes: &[Probe]) -> Result<(), TestCaseError> {
    let set = RuleSet::compile(rules.iter().copied());
    prop_assert_eq!(set.len(), rules.len());
    for probe in probes {
        let (addr, port) = realize(rules, probe);
        let expected = rules.iter().any(|r| r.allows(addr, port));
        prop_assert_eq!(
            set.allows(addr, port),
            expected,
            "{} port {} against {:?}",
            addr,
            port,
            set
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// IPv4 rules (and `any`), probed as IPv4, mapped and compatible IPv6.
    #[test]
    fn ipv4_rules(rules in rules(v4_source(), 40), probes in prop::collection::vec(probe(), 64)) {
        check(&rules, &probes)?;
    }

    /// IPv6 rules, including blocks in and around `::/96` and `::ffff:0:0/96`.
    #[test]
    fn ipv6_rules(rules in rules(v6_source(), 40), probes in prop::collection::vec(probe(), 64)) {
        check(&rules, &probes)?;
    }

    /// Both families together.
    #[test]
    fn mixed_rules(rules in rules(mixed_source(), 60), probes in prop::collection::vec(probe(), 64)) {
        check(&rules, &probes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Many rules on a few blocks: long port lists that nested blocks link to.
    #[test]
    fn crowded_blocks(rules in crowded_rules(), probes in prop::collection::vec(probe(), 64)) {
        check(&rules, &probes)?;
    }
}
