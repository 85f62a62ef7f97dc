//! Parses arbitrary UTF-8 as a `Source`, a `Cidr` and a `PortRange`: parsing never panics,
//! what `Display` writes parses back to the same value, and a rule made of `PORTS SOURCE`
//! compiles to a `RuleSet` that agrees with the rule.
//!
//! The standard library's address parser is not instrumented on stable (no `-Zbuild-std`),
//! so libFuzzer gets no coverage feedback for building a valid address out of bytes. The
//! target therefore also writes the input's first bytes as an address in IPv4, IPv6,
//! IPv4-mapped and IPv4-compatible forms and checks that they parse and normalize alike.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipfilter::{Cidr, PortRange, Rule, RuleSet, Source, normalize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(bytes) = data.first_chunk::<18>() {
        address_forms(bytes);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    text_round_trips(text);
});

/// Bytes 0..16 are an address, 16 a prefix length and 17 the written form.
fn address_forms(bytes: &[u8; 18]) {
    let bits = u128::from_be_bytes(bytes[..16].try_into().expect("16 bytes"));
    let v4 = Ipv4Addr::from(bits as u32);
    let prefix4 = bytes[16] % 33;
    let text = match bytes[17] % 4 {
        0 => format!("{}/{}", Ipv6Addr::from(bits), bytes[16] % 129),
        1 => format!("{v4}/{prefix4}"),
        2 => format!("::ffff:{v4}/{}", prefix4 + 96),
        _ => format!("::{v4}/{}", prefix4 + 96),
    };
    let (cidr, host_bits) = Cidr::parse_with_warning(&text).expect("a valid block");
    assert_eq!(cidr.to_string().parse::<Cidr>(), Ok(cidr), "{text}");
    let plain = Cidr::new(IpAddr::V4(v4), prefix4).expect("a valid IPv4 block");
    let v4_network = match plain.network() {
        IpAddr::V4(network) => u32::from(network),
        IpAddr::V6(_) => unreachable!("an IPv4 block stays IPv4"),
    };
    match bytes[17] % 4 {
        0 => {
            // The block holds the address, unless the address is IPv4 in disguise and the
            // block is an IPv6 one (`::/96` does not hold `::10.0.0.1`, which is 10.0.0.1).
            let addr = IpAddr::V6(Ipv6Addr::from(bits));
            if normalize(addr).is_ipv6() || cidr.network().is_ipv4() {
                assert!(cidr.contains(addr), "{text}");
            }
        }
        1 | 2 => {
            assert_eq!(cidr, plain, "{text}");
            assert_eq!(host_bits, u32::from(v4) != v4_network, "{text}");
            assert!(cidr.contains(IpAddr::V4(v4)), "{text}");
            assert!(cidr.contains(IpAddr::V6(v4.to_ipv6_mapped())), "{text}");
        }
        // IPv4-compatible blocks are IPv4 unless their network lies in `::/112`.
        _ if v4_network >> 16 != 0 => assert_eq!(cidr, plain, "{text}"),
        _ => assert!(cidr.network().is_ipv6(), "{text}"),
    }
}

fn text_round_trips(text: &str) {
    if let Ok(source) = text.parse::<Source>() {
        assert_eq!(source.to_string().parse::<Source>(), Ok(source), "{text:?}");
    }

    if let Ok((cidr, _)) = Cidr::parse_with_warning(text) {
        let shown = cidr.to_string();
        // The displayed block has its host bits clear, so no warning the second time.
        assert_eq!(
            Cidr::parse_with_warning(&shown),
            Ok((cidr, false)),
            "{text:?}"
        );
        assert_eq!(
            Cidr::new(cidr.network(), cidr.prefix()),
            Ok(cidr),
            "{text:?}"
        );
        assert_eq!(normalize(cidr.network()), cidr.network(), "{text:?}");
        assert!(cidr.contains(cidr.network()), "{text:?}");
    }

    if let Ok(ports) = text.parse::<PortRange>() {
        assert!(1 <= ports.lo() && ports.lo() <= ports.hi(), "{text:?}");
        assert_eq!(
            ports.to_string().parse::<PortRange>(),
            Ok(ports),
            "{text:?}"
        );
    }

    // `PORTS SOURCE`, e.g. `8000-8100 10.0.0.0/8`.
    let Some((ports, source)) = text.split_once(' ') else {
        return;
    };
    let (Ok(ports), Ok(source)) = (ports.parse::<PortRange>(), source.parse::<Source>()) else {
        return;
    };
    let rule = Rule { ports, source };
    let set = RuleSet::compile([rule]);
    let network = match source {
        Source::Any => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Source::Cidr(cidr) => cidr.network(),
    };
    let probes = [
        network,
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V4(Ipv4Addr::BROADCAST),
        match network {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6).wrapping_sub(1))),
        },
    ];
    for addr in probes {
        for port in [
            0,
            1,
            ports.lo(),
            ports.hi(),
            ports.hi().wrapping_add(1),
            u16::MAX,
        ] {
            assert_eq!(
                set.allows(addr, port),
                rule.allows(addr, port),
                "{text:?}: {addr} {port}"
            );
        }
    }
    assert!(
        set.allows(network, ports.lo()) && set.allows(network, ports.hi()),
        "{text:?}"
    );
}
