//! Unit tests of `cidr`: parsing, host bits and IPv4-in-IPv6 normalization.

use super::*;

/// IPv4 and IPv6 blocks parse, and host bits are cleared with a warning flag.
#[test]
fn parses_and_normalizes_blocks() {
    let (cidr, warn) = Cidr::parse_with_warning("10.8.220.6/24").unwrap();
    assert_eq!(cidr.to_string(), "10.8.220.0/24");
    assert!(warn);
    let (cidr, warn) = Cidr::parse_with_warning("2001:db8::/32").unwrap();
    assert_eq!(cidr.to_string(), "2001:db8::/32");
    assert!(!warn);
    assert_eq!(
        "10.0.0.1".parse::<Cidr>().unwrap().to_string(),
        "10.0.0.1/32"
    );
    assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
}

/// IPv4-mapped blocks and addresses are matched as IPv4: the dual-stack bypass is closed.
#[test]
fn mapped_forms_match_as_ipv4() {
    let cidr: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
    assert_eq!(cidr.to_string(), "10.0.0.0/8");
    let v4: Cidr = "10.0.0.0/8".parse().unwrap();
    assert!(v4.contains("::ffff:10.1.2.3".parse().unwrap()));
    assert!(v4.contains("::10.1.2.3".parse().unwrap()));
    assert!(!v4.contains("11.0.0.1".parse().unwrap()));
    assert_eq!(
        normalize("::1".parse().unwrap()),
        "::1".parse::<IpAddr>().unwrap()
    );
}

/// Malformed sources are rejected with an error that names the problem.
#[test]
fn rejects_malformed_input() {
    assert_eq!("".parse::<Cidr>(), Err(ParseError::Empty));
    assert!(matches!(
        "10.0.0/8".parse::<Cidr>(),
        Err(ParseError::Address(_))
    ));
    assert!(matches!(
        "10.0.0.0/33".parse::<Cidr>(),
        Err(ParseError::Prefix { .. })
    ));
    assert!(matches!(
        "::/129".parse::<Cidr>(),
        Err(ParseError::Prefix { .. })
    ));
    assert!(matches!(
        "10.0.0.0/x".parse::<Cidr>(),
        Err(ParseError::Prefix { .. })
    ));
    assert_eq!("ANY".parse::<Source>(), Ok(Source::Any));
    assert!("anywhere".parse::<Source>().is_err());
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// `::` and `::1` (and the rest of `::/112`) stay IPv6; other IPv4-compatible forms are IPv4.
#[test]
fn unspecified_and_loopback_stay_ipv6() {
    assert_eq!(normalize(ip("::")), ip("::"));
    assert_eq!(normalize(ip("::1")), ip("::1"));
    assert_eq!(normalize(ip("::0.0.255.255")), ip("::0.0.255.255"));
    assert_eq!(normalize(ip("::0.1.0.0")), ip("0.1.0.0"));
    assert_eq!(normalize(ip("::10.1.2.3")), ip("10.1.2.3"));
    assert_eq!(normalize(ip("::ffff:0.0.0.0")), ip("0.0.0.0"));
    assert_eq!(normalize(ip("::ffff:0.0.0.1")), ip("0.0.0.1"));
    assert_eq!(normalize(ip("1::10.1.2.3")), ip("1::a01:203"));

    for text in ["::/128", "::1/128", "::/112", "::/96"] {
        let cidr: Cidr = text.parse().unwrap();
        assert!(cidr.network().is_ipv6(), "{text} became {cidr}");
        assert_eq!(cidr.to_string(), text);
    }
    let loopback: Cidr = "::1/128".parse().unwrap();
    assert!(loopback.contains(ip("::1")));
    assert!(!loopback.contains(ip("0.0.0.1")));
    assert!(!loopback.contains(ip("::ffff:0.0.0.1")));
}

/// The family of a block is decided after host bits are cleared, so equal blocks written with
/// different host bits come out equal.
#[test]
fn family_is_decided_on_the_network() {
    let (a, warn_a) = Cidr::parse_with_warning("::2.0.0.1/96").unwrap();
    let (b, warn_b) = Cidr::parse_with_warning("::/96").unwrap();
    assert_eq!(a, b);
    assert!(warn_a && !warn_b);
    assert_eq!(a.to_string(), "::/96");
    // `::/96` is an IPv6 block: it keeps `::1` but an IPv4-compatible client is IPv4.
    assert!(a.contains(ip("::1")));
    assert!(!a.contains(ip("::10.0.0.1")));

    let (v4, warn) = Cidr::parse_with_warning("::10.9.8.7/104").unwrap();
    assert_eq!(v4.to_string(), "10.0.0.0/8");
    assert!(warn);
    let (all, warn) = Cidr::parse_with_warning("::ffff:1.2.3.4/96").unwrap();
    assert_eq!(all.to_string(), "0.0.0.0/0");
    assert!(warn);
    let (mapped, warn) = Cidr::parse_with_warning("::ffff:10.0.0.0/104").unwrap();
    assert_eq!(mapped.to_string(), "10.0.0.0/8");
    assert!(!warn);
}

/// `/0`, `/32` and `/128` are valid, and the prefix is digits only.
#[test]
fn prefix_edges() {
    let all: Cidr = "10.1.2.3/0".parse().unwrap();
    assert_eq!(all.to_string(), "0.0.0.0/0");
    assert!(all.contains(ip("255.255.255.255")));
    assert!(!all.contains(ip("::2")));
    let host: Cidr = "10.1.2.3/32".parse().unwrap();
    assert!(host.contains(ip("10.1.2.3")) && !host.contains(ip("10.1.2.4")));
    let host6: Cidr = "2001:db8::1/128".parse().unwrap();
    assert!(host6.contains(ip("2001:db8::1")) && !host6.contains(ip("2001:db8::")));
    for bad in [
        "10.0.0.0/+8",
        "10.0.0.0/",
        "10.0.0.0/-1",
        "10.0.0.0/ 8",
        "::/1000",
    ] {
        assert!(
            matches!(bad.parse::<Cidr>(), Err(ParseError::Prefix { .. })),
            "{bad}"
        );
    }
    assert!(matches!(
        Cidr::new(ip("::ffff:0.0.0.0"), 129),
        Err(ParseError::Prefix { max: 128, .. })
    ));
}
