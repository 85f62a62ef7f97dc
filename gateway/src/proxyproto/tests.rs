//! Tests of the PROXY protocol reader: every form split at every byte, every refusal,
//! and real loopback sockets.

use super::*;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n";

fn proxied(source: &str, destination: &str) -> Header {
    Header::Proxied {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
    }
}

/// A v2 header: `version_command`, `family`, then `payload` with its length.
fn v2(version_command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).unwrap();
    let mut header = V2_SIGNATURE.to_vec();
    header.extend([version_command, family]);
    header.extend(len.to_be_bytes());
    header.extend(payload);
    header
}

fn v2_v4_payload() -> Vec<u8> {
    let mut payload = vec![192, 0, 2, 1, 198, 51, 100, 2];
    payload.extend(51234u16.to_be_bytes());
    payload.extend(443u16.to_be_bytes());
    payload
}

fn v2_v6_payload() -> Vec<u8> {
    let mut payload = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
    payload.extend("2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
    payload.extend(51234u16.to_be_bytes());
    payload.extend(8443u16.to_be_bytes());
    payload
}

/// Every strict prefix of `header` is Incomplete; the whole is `expected`, alone and
/// followed by an HTTP request.
#[track_caller]
fn assert_every_split(header: &[u8], expected: Header) {
    for split in 0..header.len() {
        assert!(
            matches!(parse(&header[..split]), Ok(Parsed::Incomplete)),
            "prefix of {split} bytes of {:?}: {:?}",
            header.escape_ascii().to_string(),
            parse(&header[..split]),
        );
    }
    let complete = Parsed::Complete {
        header: expected,
        consumed: header.len(),
    };
    assert_eq!(parse(header).unwrap(), complete);
    let mut followed = header.to_vec();
    followed.extend(REQUEST);
    assert_eq!(parse(&followed).unwrap(), complete);
}

/// The name of the error `parse` returns for `buf`, with its message when it has one.
#[track_caller]
fn error(buf: &[u8]) -> String {
    match parse(buf) {
        Ok(parsed) => panic!("{:?} parsed as {parsed:?}", buf.escape_ascii().to_string()),
        Err(ProxyHeaderError::Malformed(why)) => format!("Malformed: {why}"),
        Err(ProxyHeaderError::Unsupported(why)) => format!("Unsupported: {why}"),
        Err(err) => format!("{err:?}"),
    }
}

/// v1 TCP4 parses at full length and is Incomplete at every shorter split.
#[test]
fn v1_tcp4() {
    assert_every_split(
        b"PROXY TCP4 192.0.2.1 198.51.100.2 51234 443\r\n",
        proxied("192.0.2.1:51234", "198.51.100.2:443"),
    );
    assert_every_split(
        b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
        proxied("0.0.0.0:0", "255.255.255.255:65535"),
    );
}

/// v1 TCP6 parses (compressed, full and IPv4-mapped forms) and is Incomplete at every
/// shorter split.
#[test]
fn v1_tcp6() {
    assert_every_split(
        b"PROXY TCP6 2001:db8::1 2001:db8::2 51234 8443\r\n",
        proxied("[2001:db8::1]:51234", "[2001:db8::2]:8443"),
    );
    assert_every_split(
        b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ::ffff:192.0.2.1 65535 1\r\n",
        proxied(
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            "[::ffff:192.0.2.1]:1",
        ),
    );
    assert_every_split(b"PROXY TCP6 :: ::1 1 2\r\n", proxied("[::]:1", "[::1]:2"));
}

/// v1 UNKNOWN, bare or followed by anything, is Local; the longest allowed line parses.
#[test]
fn v1_unknown() {
    assert_every_split(b"PROXY UNKNOWN\r\n", Header::Local);
    assert_every_split(
        b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
        Header::Local,
    );
    let mut longest = b"PROXY UNKNOWN ".to_vec();
    longest.resize(V1_MAX_LEN - 2, b'x');
    longest.extend(b"\r\n");
    assert_every_split(&longest, Header::Local);
}

/// v2 LOCAL is Local whatever the family, addresses and TLVs it carries.
#[test]
fn v2_local() {
    assert_every_split(&v2(0x20, 0x00, &[]), Header::Local);
    assert_every_split(&v2(0x20, 0x11, &v2_v4_payload()), Header::Local);
    assert_every_split(&v2(0x20, 0x12, &[]), Header::Local);
}

/// v2 PROXY over TCP/IPv4 gives the addresses, with or without TLVs after them.
#[test]
fn v2_proxy_v4() {
    let expected = proxied("192.0.2.1:51234", "198.51.100.2:443");
    assert_every_split(&v2(0x21, 0x11, &v2_v4_payload()), expected);
    let mut with_tlvs = v2_v4_payload();
    // PP2_TYPE_ALPN "h2", then PP2_TYPE_NOOP with three bytes.
    with_tlvs.extend([0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x03, 0, 0, 0]);
    assert_every_split(&v2(0x21, 0x11, &with_tlvs), expected);
}

/// v2 PROXY over TCP/IPv6 gives the addresses, with or without TLVs after them.
#[test]
fn v2_proxy_v6() {
    let expected = proxied("[2001:db8::1]:51234", "[2001:db8::2]:8443");
    assert_every_split(&v2(0x21, 0x21, &v2_v6_payload()), expected);
    let mut with_tlvs = v2_v6_payload();
    with_tlvs.extend([0x02, 0x00, 0x07]);
    with_tlvs.extend(b"example");
    assert_every_split(&v2(0x21, 0x21, &with_tlvs), expected);
}

/// v2 PROXY with AF_UNSPEC or a unix stream is Local; the largest allowed header parses.
#[test]
fn v2_proxy_unspec_and_unix() {
    assert_every_split(&v2(0x21, 0x00, &[]), Header::Local);
    assert_every_split(&v2(0x21, 0x00, &[0x04, 0x00, 0x00]), Header::Local);
    assert_every_split(&v2(0x21, 0x31, &[0; 216]), Header::Local);
    let mut largest = v2_v4_payload();
    largest.resize(V2_MAX_PAYLOAD, 0);
    assert_eq!(
        parse(&v2(0x21, 0x11, &largest)).unwrap(),
        Parsed::Complete {
            header: proxied("192.0.2.1:51234", "198.51.100.2:443"),
            consumed: MAX_HEADER_LEN,
        }
    );
}

/// Bytes that match neither signature are NotProxyProtocol from the first wrong byte.
#[test]
fn not_proxy_protocol() {
    for buf in [
        &b"G"[..],
        b"GET / HTTP/1.1\r\n",
        b"PRI * HTTP/2.0\r\n",
        &[0x16, 0x03, 0x01],
        b"PROXX",
        b"proxy TCP4",
        b"PROXY\tTCP4",
        b"\r\n\r\n\0\r\nQUIX",
        b"\r\n\r\n\x01",
        b"\n",
    ] {
        assert_eq!(
            error(buf),
            "NotProxyProtocol",
            "{:?}",
            buf.escape_ascii().to_string()
        );
    }
}

/// v1 lines break the spec in each way they can, each refused once the bytes show it.
#[test]
fn v1_malformed() {
    let cases: [(&[u8], &str); 22] = [
        (b"PROXY TCP5 ", "protocol is not TCP4, TCP6 or UNKNOWN"),
        (b"PROXY TCP5", "protocol is not TCP4, TCP6 or UNKNOWN"),
        (b"PROXY tcp4 ", "protocol is not TCP4, TCP6 or UNKNOWN"),
        (
            b"PROXY UNKNOWNX\r\n",
            "protocol is not TCP4, TCP6 or UNKNOWN",
        ),
        (b"PROXY  TCP4", "protocol is not TCP4, TCP6 or UNKNOWN"),
        (b"PROXY TCP4\r\n", "missing addresses and ports"),
        (
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n",
            "missing addresses or ports",
        ),
        (b"PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n", "bad address"),
        (
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 ",
            "more than four fields after the protocol",
        ),
        (
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n",
            "more than four fields after the protocol",
        ),
        (b"PROXY TCP4 192.0.2.256 ", "bad address"),
        (b"PROXY TCP4 192.0.2.256", "bad address"),
        (b"PROXY TCP4 192.0.2 1.1.1.1 1 2\r\n", "bad address"),
        (b"PROXY TCP4 192.0.02.1", "bad address"),
        (b"PROXY TCP4 ::1", "TCP4 with an IPv6 address"),
        (b"PROXY TCP4 ::1 ::2 1 2\r\n", "TCP4 with an IPv6 address"),
        (
            b"PROXY TCP6 192.0.2.1 ::1 1 2\r\n",
            "TCP6 with an IPv4 address",
        ),
        (b"PROXY TCP6 2001:db8::1::2", "bad address"),
        (b"PROXY TCP6 12345:", "bad address"),
        (b"PROXY TCP6 1.2.3.4", "TCP6 with an IPv4 address"),
        (b"PROXY UNKNOWN\n", "line feed without carriage return"),
        (
            b"PROXY UNKNOWN\rX",
            "carriage return not followed by line feed",
        ),
    ];
    for (buf, why) in cases {
        assert_eq!(
            error(buf),
            format!("Malformed: v1: {why}"),
            "{:?}",
            buf.escape_ascii().to_string()
        );
    }
}

/// v1 ports outside 0..=65535 or not plain decimal are refused.
#[test]
fn v1_bad_port() {
    let why = "Malformed: v1: port is not a decimal number from 0 to 65535";
    for port in [
        "65536", "+80", "-1", "0x50", "123456", "99999", "", "1a", "８",
    ] {
        let line = format!("PROXY TCP4 192.0.2.1 198.51.100.2 {port} 443\r\n");
        assert_eq!(error(line.as_bytes()), why, "source port {port:?}");
        let line = format!("PROXY TCP4 192.0.2.1 198.51.100.2 443 {port}\r\n");
        assert_eq!(error(line.as_bytes()), why, "destination port {port:?}");
    }
    // Refused before the line ends.
    assert_eq!(error(b"PROXY TCP4 192.0.2.1 198.51.100.2 65536"), why);
}

/// A v1 line whose `\r\n` would end past byte 107 is TooLong, from the 106th byte on.
#[test]
fn v1_too_long() {
    let mut line = b"PROXY UNKNOWN ".to_vec();
    line.resize(V1_MAX_LEN - 2, b'x');
    line.push(b'\r');
    assert_eq!(parse(&line).unwrap(), Parsed::Incomplete);
    line.pop();
    line.push(b'x');
    assert_eq!(error(&line), "TooLong");
    line.extend(b"\r\n");
    assert_eq!(error(&line), "TooLong");
    let mut endless = b"PROXY UNKNOWN ".to_vec();
    endless.resize(1000, b'x');
    assert_eq!(error(&endless), "TooLong");
}

/// v2 headers with a bad version, command, family or length are refused as soon as the
/// byte that shows it arrives.
#[test]
fn v2_invalid() {
    let payload = v2_v4_payload();
    let cases: [(Vec<u8>, &str); 12] = [
        (
            v2(0x11, 0x11, &payload)[..13].to_vec(),
            "Malformed: v2: version is not 2",
        ),
        (v2(0x31, 0x11, &payload), "Malformed: v2: version is not 2"),
        (
            v2(0x22, 0x11, &payload)[..13].to_vec(),
            "Malformed: v2: command is neither LOCAL nor PROXY",
        ),
        (
            v2(0x2f, 0x11, &payload),
            "Malformed: v2: command is neither LOCAL nor PROXY",
        ),
        (
            v2(0x21, 0x12, &payload)[..14].to_vec(),
            "Unsupported: v2: datagram transport",
        ),
        (
            v2(0x21, 0x22, &[0; 36]),
            "Unsupported: v2: datagram transport",
        ),
        (
            v2(0x21, 0x32, &[0; 216]),
            "Unsupported: v2: datagram transport",
        ),
        (
            v2(0x21, 0x41, &payload),
            "Malformed: v2: unknown address family or transport",
        ),
        (
            v2(0x21, 0x13, &payload),
            "Malformed: v2: unknown address family or transport",
        ),
        (
            v2(0x21, 0x11, &payload[..11])[..16].to_vec(),
            "Malformed: v2: length does not cover the addresses",
        ),
        (
            v2(0x21, 0x21, &[0; 35]),
            "Malformed: v2: length does not cover the addresses",
        ),
        (
            v2(0x21, 0x31, &[0; 108]),
            "Malformed: v2: length does not cover the addresses",
        ),
    ];
    for (buf, expected) in cases {
        assert_eq!(
            error(&buf),
            expected,
            "{:?}",
            buf.escape_ascii().to_string()
        );
    }
}

/// A v2 length over 4096 is TooLong from the length bytes alone.
#[test]
fn v2_too_long() {
    let mut header = v2(0x21, 0x11, &[0; V2_MAX_PAYLOAD + 1]);
    assert_eq!(error(&header), "TooLong");
    header.truncate(V2_FIXED_LEN);
    assert_eq!(error(&header), "TooLong");
    assert_eq!(
        error(&v2(0x20, 0x00, &[0; 65535])[..V2_FIXED_LEN]),
        "TooLong"
    );
}

/// Every prefix of many valid addresses passes the prefix checks, so no valid header is
/// ever refused early.
#[test]
fn address_prefixes_of_valid_addresses_pass() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64: a fixed, dependency-free sequence.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut texts = Vec::new();
    for _ in 0..2000 {
        let bits = (u128::from(next()) << 64) | u128::from(next());
        // Zero some groups so `::` shows up in many places.
        let mask = next();
        let mut groups = [0u16; 8];
        for (index, group) in groups.iter_mut().enumerate() {
            let value = (bits >> (16 * index)) as u16;
            *group = if (mask >> index) & 1 == 1 {
                0
            } else {
                value >> ((mask >> 8) & 15)
            };
        }
        let v6 = Ipv6Addr::from(groups);
        texts.push((v6.to_string(), true));
        texts.push((
            format!(
                "{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}",
                groups[0],
                groups[1],
                groups[2],
                groups[3],
                groups[4],
                groups[5],
                groups[6],
                groups[7]
            ),
            true,
        ));
        let v4 = Ipv4Addr::from((next() >> (next() & 31)) as u32);
        texts.push((v4.to_string(), false));
        texts.push((format!("::ffff:{v4}"), true));
        texts.push((format!("::{v4}"), true));
        texts.push((format!("1:2:3:4:5:6:{v4}"), true));
        texts.push((format!("1::{v4}"), true));
    }
    texts.push(("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".into(), true));
    texts.push(("1:2:3:4:5:6:7::".into(), true));
    texts.push(("::2:3:4:5:6:7:8".into(), true));
    for (text, v6) in &texts {
        let parsed = text.parse::<IpAddr>();
        assert!(parsed.is_ok_and(|ip| ip.is_ipv6() == *v6), "{text}");
        for end in 0..=text.len() {
            let prefix = &text.as_bytes()[..end];
            let ok = if *v6 {
                ipv6_prefix(prefix)
            } else {
                ipv4_prefix(prefix)
            };
            assert!(ok, "{:?} is a prefix of {text}", &text[..end]);
        }
    }
}

/// Connects a client to a fresh loopback listener; returns (client, server side).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// A header and a request in one write: the header is taken and the request is left,
/// byte for byte, for the next layer.
#[tokio::test]
async fn read_header_leaves_the_request() {
    let (mut client, mut server) = pair().await;
    let mut bytes = v2(0x21, 0x11, &v2_v4_payload());
    bytes.extend(REQUEST);
    client.write_all(&bytes).await.unwrap();
    client.shutdown().await.unwrap();

    let header = read_header(&server, Duration::from_secs(10)).await.unwrap();
    assert_eq!(header, proxied("192.0.2.1:51234", "198.51.100.2:443"));
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, REQUEST);
}

/// A header split over two writes with a pause is read whole once the rest arrives.
#[tokio::test]
async fn read_header_waits_for_the_rest() {
    let (mut client, mut server) = pair().await;
    let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 51234 8443\r\n";
    let writer = tokio::spawn(async move {
        client.write_all(&line[..20]).await.unwrap();
        // Only to make the header arrive in two pieces.
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(&line[20..]).await.unwrap();
        client.write_all(REQUEST).await.unwrap();
        client.shutdown().await.unwrap();
    });

    let header = read_header(&server, Duration::from_secs(10)).await.unwrap();
    assert_eq!(header, proxied("[2001:db8::1]:51234", "[2001:db8::2]:8443"));
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, REQUEST);
    writer.await.unwrap();
}

/// A client that sends nothing runs into the timeout.
#[tokio::test]
async fn read_header_times_out() {
    let (_client, server) = pair().await;
    let err = read_header(&server, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyHeaderError::Timeout), "{err:?}");
}

/// A client that closes before the header is complete gives Closed, with or without a
/// partial header.
#[tokio::test]
async fn read_header_closed() {
    for sent in [&b""[..], b"PROXY TCP4 192.0.2.1", &V2_SIGNATURE[..5]] {
        let (mut client, server) = pair().await;
        client.write_all(sent).await.unwrap();
        client.shutdown().await.unwrap();
        let err = read_header(&server, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProxyHeaderError::Closed),
            "{err:?} after {sent:?}"
        );
    }
}

/// An HTTP request sent straight to the listener is refused without waiting for more.
#[tokio::test]
async fn read_header_refuses_plain_http() {
    let (mut client, server) = pair().await;
    client.write_all(b"GET").await.unwrap();
    let err = read_header(&server, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyHeaderError::NotProxyProtocol), "{err:?}");
}
