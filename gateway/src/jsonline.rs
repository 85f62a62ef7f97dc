//! A writer of flat JSON objects into a byte buffer, for lines with a fixed set of fields
//! (the access log): no intermediate values, no generic serializer, integers through `itoa`.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

/// One object being written; `finish` closes it and ends the line.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    /// Opens an object at the end of `out`.
    pub fn open(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object { out, first: true }
    }

    /// Closes the object and appends a newline.
    pub fn finish(self) {
        self.out.extend_from_slice(b"}\n");
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        // Keys are identifiers chosen in code: nothing to escape.
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A field whose value is written raw by `write` (the caller keeps it valid JSON).
    pub fn raw(&mut self, key: &str, write: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        self.key(key);
        write(self.out);
        self
    }

    /// A string field.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        string(self.out, value);
        self
    }

    /// A string field, `null` when absent.
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.str(key, value),
            None => self.raw(key, |out| out.extend_from_slice(b"null")),
        }
    }

    /// An unsigned integer field.
    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    /// An unsigned integer field left out when absent.
    pub fn skip_none_u64(&mut self, key: &str, value: Option<u64>) -> &mut Self {
        if let Some(value) = value {
            self.u64(key, value);
        }
        self
    }

    /// A boolean field.
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.raw(key, |out| {
            out.extend_from_slice(if value { b"true" } else { b"false" })
        })
    }

    /// A duration as a number of milliseconds with microsecond precision (`12.345`).
    pub fn millis(&mut self, key: &str, value: Duration) -> &mut Self {
        self.key(key);
        millis(self.out, value);
        self
    }

    /// A duration in milliseconds, `null` when absent.
    pub fn opt_millis(&mut self, key: &str, value: Option<Duration>) -> &mut Self {
        match value {
            Some(value) => self.millis(key, value),
            None => self.raw(key, |out| out.extend_from_slice(b"null")),
        }
    }

    /// An IP address as a string.
    pub fn ip(&mut self, key: &str, value: IpAddr) -> &mut Self {
        self.key(key);
        if let IpAddr::V4(v4) = value {
            let mut buffer = itoa::Buffer::new();
            self.out.push(b'"');
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    self.out.push(b'.');
                }
                self.out.extend_from_slice(buffer.format(octet).as_bytes());
            }
            self.out.push(b'"');
            return self;
        }
        let mut text = String::with_capacity(48);
        // Writing to a String cannot fail.
        let _ = write!(text, "\"{value}\"");
        self.out.extend_from_slice(text.as_bytes());
        self
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

fn millis(out: &mut Vec<u8>, value: Duration) {
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

    fn line(build: impl FnOnce(&mut Object<'_>)) -> serde_json::Value {
        let mut out = Vec::new();
        let mut object = Object::open(&mut out);
        build(&mut object);
        object.finish();
        assert_eq!(out.last(), Some(&b'\n'));
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
            let value = line(|o| {
                o.str("s", sample);
            });
            assert_eq!(value["s"], sample, "{sample:?}");
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

    /// Numbers, booleans, nulls, addresses and omitted fields come out as typed JSON.
    #[test]
    fn typed_fields() {
        let value = line(|o| {
            o.u64("n", u64::MAX)
                .bool("t", true)
                .bool("f", false)
                .opt_str("none", None)
                .opt_str("some", Some("x"))
                .skip_none_u64("skipped", None)
                .skip_none_u64("kept", Some(7))
                .millis("ms", Duration::from_micros(12_345))
                .millis("small", Duration::from_micros(5))
                .opt_millis("nul", None)
                .ip("v4", "10.1.2.3".parse().unwrap())
                .ip("v6", "2001:db8::1".parse().unwrap());
        });
        assert_eq!(value["n"], u64::MAX);
        assert_eq!(value["t"], true);
        assert_eq!(value["f"], false);
        assert!(value["none"].is_null());
        assert_eq!(value["some"], "x");
        assert!(value.get("skipped").is_none());
        assert_eq!(value["kept"], 7);
        assert_eq!(value["ms"].as_f64(), Some(12.345));
        assert_eq!(value["small"].as_f64(), Some(0.005));
        assert!(value["nul"].is_null());
        assert_eq!(value["v4"], "10.1.2.3");
        assert_eq!(value["v6"], "2001:db8::1");
    }
}
