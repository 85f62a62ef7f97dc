//! `RuleSet` lookups per second at 10, 1k and 100k random rules, and compile time at 100k.
//!
//! Run with `cargo bench -p ipfilter`; figures and method are in
//! `docs/benchmarks-ipfilter.md`. Rules and probes come from a fixed seed, so runs compare.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput};
use ipfilter::{Cidr, PortRange, Rule, RuleSet, Source};

/// Probes per measured iteration; enough that the table, not the probe list, sets the
/// cache footprint.
const PROBES: usize = 4096;

/// splitmix64: a fixed, dependency-free stream of random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn port(&mut self) -> u16 {
        1 + self.below(65535) as u16
    }

    fn v6(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

/// Half IPv4 (/16 to /32), half IPv6 (/32 to /128), random addresses; ports: 40% one port,
/// 40% a range of up to 2,000 ports, 20% all ports. (Shorter prefixes make the sets easier:
/// a few thousand /8 rules with all ports swallow most IPv4 rules.)
fn random_rules(rng: &mut Rng, n: usize) -> Vec<Rule> {
    (0..n)
        .map(|_| {
            let cidr = if rng.below(2) == 0 {
                let addr = IpAddr::V4(Ipv4Addr::from(rng.next() as u32));
                Cidr::new(addr, 16 + rng.below(17) as u8)
            } else {
                let addr = IpAddr::V6(Ipv6Addr::from(rng.v6()));
                Cidr::new(addr, 32 + rng.below(97) as u8)
            };
            let lo = rng.port();
            let ports = match rng.below(5) {
                0 | 1 => PortRange::new(lo.into(), lo.into()),
                2 | 3 => PortRange::new(
                    lo.into(),
                    (u32::from(lo) + rng.below(2001) as u32).min(65535),
                ),
                _ => Ok(PortRange::ALL),
            };
            Rule {
                ports: ports.expect("valid ports"),
                source: Source::Cidr(cidr.expect("valid prefix")),
            }
        })
        .collect()
}

/// The worst case for the representation: every rule one random port on one of the blocks
/// around a single address (/0 to /16), so a point is covered by thousands of distinct ports
/// that nested blocks cannot all copy.
fn crowded_rules(rng: &mut Rng, n: usize) -> Vec<Rule> {
    let center = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    (0..n)
        .map(|_| {
            let port = u32::from(rng.port());
            Rule {
                ports: PortRange::new(port, port).expect("valid port"),
                source: Source::Cidr(Cidr::new(center, rng.below(17) as u8).expect("valid")),
            }
        })
        .collect()
}

/// Mixed probes: half inside a random rule's block (a third of the IPv4 ones in mapped
/// IPv6 form), half anywhere; ports half from that rule, half random.
fn probes(rng: &mut Rng, rules: &[Rule]) -> Vec<(IpAddr, u16)> {
    (0..PROBES)
        .map(|_| {
            let rule = rules[rng.below(rules.len() as u64) as usize];
            let Source::Cidr(cidr) = rule.source else {
                unreachable!("benchmark rules are CIDRs")
            };
            let near = rng.below(2) == 0;
            let addr = match cidr.network() {
                IpAddr::V4(net) if near => {
                    let host = (rng.next() as u32)
                        .checked_shr(cidr.prefix().into())
                        .unwrap_or(0);
                    Ipv4Addr::from(u32::from(net) | host)
                }
                IpAddr::V6(net) if near => {
                    let host = rng.v6().checked_shr(cidr.prefix().into()).unwrap_or(0);
                    return (
                        IpAddr::V6(Ipv6Addr::from(u128::from(net) | host)),
                        probe_port(rng, rule),
                    );
                }
                _ if rng.below(2) == 0 => Ipv4Addr::from(rng.next() as u32),
                _ => return (IpAddr::V6(Ipv6Addr::from(rng.v6())), probe_port(rng, rule)),
            };
            let addr = if rng.below(3) == 0 {
                IpAddr::V6(addr.to_ipv6_mapped())
            } else {
                IpAddr::V4(addr)
            };
            (addr, probe_port(rng, rule))
        })
        .collect()
}

fn probe_port(rng: &mut Rng, rule: Rule) -> u16 {
    if rng.below(2) == 0 {
        let (lo, hi) = (rule.ports.lo(), rule.ports.hi());
        lo + rng.below(u64::from(hi - lo) + 1) as u16
    } else {
        rng.port()
    }
}

/// A compiled set and the probes to look up in it.
struct Case {
    rules: usize,
    set: RuleSet,
    probes: Vec<(IpAddr, u16)>,
}

impl Case {
    fn new(rng: &mut Rng, rules: &[Rule]) -> Case {
        Case {
            rules: rules.len(),
            set: RuleSet::compile(rules.iter().copied()),
            probes: probes(rng, rules),
        }
    }
}

fn lookups(c: &mut Criterion, group_name: &str, cases: &[Case]) {
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(PROBES as u64));
    for Case { rules, set, probes } in cases {
        let allowed = probes.iter().filter(|(a, p)| set.allows(*a, *p)).count();
        eprintln!("{group_name}/{rules}: {set:?}, {allowed} of {PROBES} probes allowed");
        group.bench_function(rules.to_string(), |b| {
            b.iter(|| {
                let mut allowed = 0u32;
                for &(addr, port) in probes {
                    allowed += u32::from(set.allows(black_box(addr), black_box(port)));
                }
                allowed
            })
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng(0x5eed);
    let random: Vec<Case> = [10, 1_000, 100_000]
        .into_iter()
        .map(|n| {
            let rules = random_rules(&mut rng, n);
            Case::new(&mut rng, &rules)
        })
        .collect();
    lookups(c, "lookup", &random);

    let crowded_rules = crowded_rules(&mut rng, 100_000);
    lookups(c, "lookup_crowded", &[Case::new(&mut rng, &crowded_rules)]);

    let rules = random_rules(&mut rng, 100_000);
    let mut group = c.benchmark_group("compile");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    for (name, rules) in [("100000", &rules), ("crowded_100000", &crowded_rules)] {
        group.bench_function(name, |b| {
            b.iter_batched(|| rules.clone(), RuleSet::compile, BatchSize::LargeInput)
        });
    }
    group.finish();
}

// What `criterion_group!` and `criterion_main!` expand to, minus the undocumented `pub fn`
// that `missing_docs` would flag.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
