//! JSON values written straight into a byte buffer, for lines with a fixed set of fields
//! (the access log writes the field names as literals between them): no intermediate
//! values, no generic serializer, integers through `itoa`.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

/// Appends `value` as a JSON string, or `null`.
pub fn opt_string(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => string(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends an unsigned integer.
pub fn u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Appends a duration in milliseconds, or `null`.
pub fn opt_millis(out: &mut Vec<u8>, value: Option<Duration>) {
    match value {
        Some(value) => millis(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends an IP address as a JSON string.
pub fn ip(out: &mut Vec<u8>, value: IpAddr) {
    match value {
        IpAddr::V4(v4) => {
            let mut buffer = itoa::Buffer::new();
            out.push(b'"');
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(buffer.format(octet).as_bytes());
            }
            out.push(b'"');
        }
        IpAddr::V6(v6) => {
            let mut text = String::with_capacity(48);
            // Writing to a String cannot fail.
            let _ = write!(text, "\"{v6}\"");
            out.extend_from_slice(text.as_bytes());
        }
    }
}

/// Appends `value` as a JSON string.
pub fn string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let bytes = value.as_bytes();
    // The common case: nothing to escape.
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut clean = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 => {
                out.extend_from_slice(&bytes[clean..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
                clean = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean..i]);
        out.extend_from_slice(escape);
        clean = i + 1;
    }
    out.extend_from_slice(&bytes[clean..]);
    out.push(b'"');
}

/// Whether any byte is a control character, `"` or `\\`: eight bytes at a time (SWAR).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `word` is zero ⇔ its high bit is set in `zero_bytes(word)` (exact when no
    // byte of `word` has its own high bit set, which `& !word` ensures).
    let zero_bytes = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        // Bytes below 0x20: subtracting 0x20 borrows into the high bit (for bytes < 0x80).
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
        let quote = zero_bytes(word ^ (ONES * u64::from(b'"')));
        let backslash = zero_bytes(word ^ (ONES * u64::from(b'\\')));
        if control | quote | backslash != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
}

/// Appends a duration as a number of milliseconds with microsecond precision (`12.345`).
pub fn millis(out: &mut Vec<u8>, value: Duration) {
    let micros = value.as_micros();
    let mut buffer = itoa::Buffer::new();
    out.extend_from_slice(buffer.format(micros / 1000).as_bytes());
    let fraction = (micros % 1000) as u16;
    out.extend_from_slice(&[
        b'.',
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses what `write` appends, as one JSON value.
    fn parsed(write: impl FnOnce(&mut Vec<u8>)) -> serde_json::Value {
        let mut out = Vec::new();
        write(&mut out);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    /// Every string survives the round trip through a real JSON parser, control characters,
    /// quotes, backslashes and non-ASCII included.
    #[test]
    fn strings_round_trip() {
        let samples = [
            "",
            "plain",
            "a\"b\\c",
            "line\nbreak\r\ttab",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "é ü 漢字 🚀",
            "/project/p/endpoint/e/v1/chat?x=\"1\"",
        ];
        for sample in samples {
            assert_eq!(parsed(|out| string(out, sample)), sample, "{sample:?}");
        }
    }

    /// The eight-at-a-time check agrees with a byte-by-byte one for every byte value at every
    /// position of strings of several lengths.
    #[test]
    fn escape_check_agrees_with_the_naive_one() {
        let naive = |bytes: &[u8]| bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for len in [1, 7, 8, 9, 16, 23] {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    assert_eq!(
                        needs_escape(&bytes),
                        naive(&bytes),
                        "{byte:#x} at {at} of {len}"
                    );
                }
            }
        }
        let text = "é ü 漢字 🚀 plain text, long enough for several words".as_bytes();
        assert!(!needs_escape(text));
    }

    /// Numbers, nulls, durations and addresses come out as typed JSON.
    #[test]
    fn typed_values() {
        assert_eq!(parsed(|out| u64(out, u64::MAX)), u64::MAX);
        assert!(parsed(|out| opt_string(out, None)).is_null());
        assert_eq!(parsed(|out| opt_string(out, Some("x"))), "x");
        let ms = parsed(|out| millis(out, Duration::from_micros(12_345)));
        assert_eq!(ms.as_f64(), Some(12.345));
        let small = parsed(|out| millis(out, Duration::from_micros(5)));
        assert_eq!(small.as_f64(), Some(0.005));
        assert!(parsed(|out| opt_millis(out, None)).is_null());
        assert_eq!(
            parsed(|out| ip(out, "10.1.2.3".parse().unwrap())),
            "10.1.2.3"
        );
        assert_eq!(
            parsed(|out| ip(out, "2001:db8::1".parse().unwrap())),
            "2001:db8::1"
        );
    }
}
