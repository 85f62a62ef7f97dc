//! Token usage from OpenAI-shaped responses, read from the end of the body without
//! buffering it: [`Tail`] keeps the last chunks (as `Bytes` clones, so nothing is copied
//! while the body streams) totalling at least [`KEEP`] bytes, and [`scan`] finds the last
//! `"usage": {…}` object in them once the body ended.
//!
//! Both shapes put usage last: a JSON answer ends with `"usage":{"prompt_tokens":N,
//! "completion_tokens":M,…}}`, and a stream asked for `stream_options.include_usage` sends
//! it in its final chunk, just before `data: [DONE]` (earlier chunks carry
//! `"usage": null`).
//!
//! The scanner trusts only keys: a `"usage"` whose quotes are escaped is inside a string
//! (a model's answer quoting JSON), and an object that is not the last member of its
//! containing top-level-looking value (something else closes after its container) is
//! nested, e.g. a tool result's own usage; both are skipped.

use std::collections::VecDeque;
use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem;

/// Bytes kept from the end of the body.
pub const KEEP: usize = 8 * 1024;
/// Most bytes scanned at the end (a single chunk can be larger than [`KEEP`]).
pub const MAX_SCAN: usize = 64 * 1024;
/// Chunks kept before the older ones are copied into one (bodies of tiny chunks).
const MAX_CHUNKS: usize = 64;
/// `"usage"` keys tried, newest first, before giving up.
const MAX_CANDIDATES: usize = 16;

/// Tokens one request used, as its worker reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// `usage.prompt_tokens`.
    pub prompt_tokens: u64,
    /// `usage.completion_tokens` (0 when absent, as in embeddings).
    pub completion_tokens: u64,
}

/// The end of a response body, kept while it streams.
#[derive(Debug, Default)]
pub struct Tail {
    /// The newest chunk.
    last: Option<Bytes>,
    /// Older chunks, oldest first, dropped once the newer ones hold [`KEEP`] bytes.
    earlier: VecDeque<Bytes>,
    earlier_len: usize,
}

impl Tail {
    /// Keeps `chunk` (a cheap reference-counted clone of it).
    pub fn push(&mut self, chunk: &Bytes) {
        if chunk.is_empty() {
            return;
        }
        let Some(previous) = self.last.replace(chunk.clone()) else {
            return;
        };
        self.earlier_len += previous.len();
        self.earlier.push_back(previous);
        let newest = chunk.len();
        while let Some(front) = self.earlier.front() {
            if self.earlier_len - front.len() + newest < KEEP {
                break;
            }
            self.earlier_len -= front.len();
            self.earlier.pop_front();
        }
        if self.earlier.len() > MAX_CHUNKS {
            let mut joined = Vec::with_capacity(self.earlier_len);
            for part in self.earlier.drain(..) {
                joined.extend_from_slice(&part);
            }
            self.earlier.push_back(Bytes::from(joined));
        }
    }

    /// The usage reported at the end of what was kept, if any.
    pub fn scan(&self) -> Option<Usage> {
        let last = self.last.as_ref()?;
        if self.earlier.is_empty() {
            return scan(&last[last.len().saturating_sub(MAX_SCAN)..]);
        }
        let total = (self.earlier_len + last.len()).min(MAX_SCAN);
        let mut joined = Vec::with_capacity(total);
        let mut skip = self.earlier_len + last.len() - total;
        for part in self.earlier.iter().chain([last]) {
            let from = skip.min(part.len());
            skip -= from;
            joined.extend_from_slice(&part[from..]);
        }
        scan(&joined)
    }
}

/// The last top-level-looking `"usage": {…}` object of `text` with a whole-number
/// `prompt_tokens`.
pub fn scan(text: &[u8]) -> Option<Usage> {
    const KEY: &[u8] = b"\"usage\"";
    // Built once: a finder's set-up costs more than searching a small answer.
    static FINDER: LazyLock<memmem::FinderRev<'static>> =
        LazyLock::new(|| memmem::FinderRev::new(KEY));
    let key = KEY;
    let finder = &*FINDER;
    let mut end = text.len();
    for _ in 0..MAX_CANDIDATES {
        let at = finder.rfind(&text[..end])?;
        end = at;
        if escaped(text, at) {
            continue;
        }
        let mut i = skip_space(text, at + key.len());
        if text.get(i) != Some(&b':') {
            continue;
        }
        i = skip_space(text, i + 1);
        if text.get(i) != Some(&b'{') {
            // `"usage": null` on the chunks before the last.
            continue;
        }
        let Some(close) = matching(text, i) else {
            continue;
        };
        if !last_of_top_level(text, close + 1) {
            continue;
        }
        if let Some(usage) = parse(&text[i..=close]) {
            return Some(usage);
        }
    }
    None
}

/// Whether the quote at `at` is preceded by an odd number of backslashes.
fn escaped(text: &[u8], at: usize) -> bool {
    text[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

fn skip_space(text: &[u8], mut i: usize) -> usize {
    while text.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The brackets (`{`, `}`, `[`, `]`) of `text` from `from` on, with their positions; those
/// inside strings are skipped.
fn brackets(text: &[u8], from: usize) -> impl Iterator<Item = (usize, u8)> + '_ {
    let (mut in_string, mut escaped) = (false, false);
    text.iter()
        .enumerate()
        .skip(from)
        .filter_map(move |(i, &b)| {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                return None;
            }
            match b {
                b'"' => {
                    in_string = true;
                    None
                }
                b'{' | b'}' | b'[' | b']' => Some((i, b)),
                _ => None,
            }
        })
}

fn opens(bracket: u8) -> bool {
    matches!(bracket, b'{' | b'[')
}

/// The index of the `}` (or `]`) closing the object (or array) opened at `open`.
fn matching(text: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in brackets(text, open) {
        if opens(b) {
            depth += 1;
        } else {
            depth -= 1;
            if depth == 0 {
                return ((text[open] == b'{') == (b == b'}')).then_some(i);
            }
        }
    }
    None
}

/// From just after a usage object: its container must close, and nothing after that
/// close until the next value begins (`data: [DONE]`, a later event) or the text ends.
fn last_of_top_level(text: &[u8], from: usize) -> bool {
    let mut depth = 0i64;
    let mut closed = false;
    for (_, b) in brackets(text, from) {
        if opens(b) {
            if closed && depth == -1 {
                // The next value (another event) starts: ours was top-level.
                return true;
            }
            depth += 1;
        } else {
            depth -= 1;
            if depth == -1 {
                closed = true;
            } else if depth < -1 {
                return false;
            }
        }
    }
    closed
}

/// `prompt_tokens` (required) and `completion_tokens` (0 when absent) of a usage object
/// (`{` to its matching `}`); other members are skipped. Whole non-negative numbers only.
fn parse(object: &[u8]) -> Option<Usage> {
    let mut prompt = None;
    let mut completion = None;
    let mut i = skip_space(object, 1);
    if object.get(i) == Some(&b'}') {
        return None;
    }
    loop {
        if object.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(object, i)?;
        let key = &object[i + 1..key_end];
        i = skip_space(object, key_end + 1);
        if object.get(i) != Some(&b':') {
            return None;
        }
        i = skip_space(object, i + 1);
        let slot = match key {
            b"prompt_tokens" => Some(&mut prompt),
            b"completion_tokens" => Some(&mut completion),
            _ => None,
        };
        i = match slot {
            Some(slot) => {
                let (value, next) = whole_number(object, i)?;
                *slot = Some(value);
                next
            }
            None => skip_value(object, i)?,
        };
        i = skip_space(object, i);
        match object.get(i)? {
            b',' => i = skip_space(object, i + 1),
            b'}' => break,
            _ => return None,
        }
    }
    Some(Usage {
        prompt_tokens: prompt?,
        completion_tokens: completion.unwrap_or(0),
    })
}

/// The index of the quote closing the string opened at `open`.
fn string_end(text: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    while i < text.len() {
        match text[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// A whole number starting at `i`, and the index after it (which must end the number).
fn whole_number(text: &[u8], mut i: usize) -> Option<(u64, usize)> {
    let start = i;
    let mut value: u64 = 0;
    while let Some(digit) = text.get(i).filter(|b| b.is_ascii_digit()) {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
        i += 1;
    }
    let ends =
        matches!(text.get(i), Some(b) if b.is_ascii_whitespace() || *b == b',' || *b == b'}');
    (i > start && ends).then_some((value, i))
}

/// The index just after the JSON value starting at `i`.
fn skip_value(text: &[u8], i: usize) -> Option<usize> {
    match text.get(i)? {
        b'"' => string_end(text, i).map(|end| end + 1),
        b'{' | b'[' => matching(text, i).map(|end| end + 1),
        _ => {
            // A number or a literal: up to the next delimiter.
            let len = text[i..]
                .iter()
                .position(|b| b.is_ascii_whitespace() || matches!(b, b',' | b'}' | b']'))?;
            (len > 0).then_some(i + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(p: u64, c: u64) -> Option<Usage> {
        Some(Usage {
            prompt_tokens: p,
            completion_tokens: c,
        })
    }

    fn tail_of(chunks: &[&[u8]]) -> Tail {
        let mut tail = Tail::default();
        for chunk in chunks {
            tail.push(&Bytes::copy_from_slice(chunk));
        }
        tail
    }

    /// A whole JSON answer, compact or pretty-printed.
    #[test]
    fn json_bodies() {
        let body = br#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;
        assert_eq!(scan(body), usage(12, 7));
        let pretty = b"{\n  \"choices\": [],\n  \"usage\" : {\n    \"prompt_tokens\": 3,\n    \"total_tokens\": 3\n  },\n  \"x\": null\n}\n";
        assert_eq!(scan(pretty), usage(3, 0));
        // OpenAI's details objects and other members are skipped.
        let detailed = br#"{"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"accepted_prediction_tokens":0},"note":"a, b} [c]","list":[1,{"prompt_tokens":5}],"x":true}}"#;
        assert_eq!(scan(detailed), usage(19, 10));
    }

    /// A stream whose final chunk carries usage (the earlier ones `"usage": null`).
    #[test]
    fn sse_final_chunk() {
        let stream: &[&[u8]] = &[
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n",
            b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
            b"data: [DONE]\n\n",
        ];
        assert_eq!(tail_of(stream).scan(), usage(9, 2));
        // Without include_usage there is none.
        assert_eq!(tail_of(&stream[..2]).scan(), None);
    }

    /// The usage object split over chunk boundaries, at every possible point.
    #[test]
    fn split_across_chunks() {
        let whole: &[u8] = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":41,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
        for cut in 1..whole.len() {
            let tail = tail_of(&[&whole[..cut], &whole[cut..]]);
            assert_eq!(tail.scan(), usage(41, 1), "cut at {cut}");
        }
        // Byte by byte: many tiny chunks are joined, nothing is lost.
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(tail_of(&bytes).scan(), usage(41, 1));
    }

    /// No usage, null usage, malformed or truncated usage, and garbage give nothing.
    #[test]
    fn absent_or_malformed() {
        assert_eq!(scan(b""), None);
        assert_eq!(scan(br#"{"choices":[]}"#), None);
        assert_eq!(scan(br#"{"usage":null}"#), None);
        assert_eq!(scan(br#"{"usage":{"prompt_tokens":"12"}}"#), None);
        assert_eq!(scan(br#"{"usage":{"prompt_tokens":-1}}"#), None);
        assert_eq!(scan(br#"{"usage":{"prompt_tokens":1,"#), None);
        assert_eq!(scan(br#"{"usage":{"completion_tokens":4}}"#), None);
        assert_eq!(scan(br#"{"usage":{}}"#), None);
        assert_eq!(scan(br#"{"usage":{"prompt_tokens":12.5}}"#), None);
        assert_eq!(scan(br#"{"usage":{"prompt_tokens":1e3}}"#), None);
        assert_eq!(scan(br#"{"usage":{"prompt_tokens":}}"#), None);
        assert_eq!(
            scan(br#"{"usage":{"prompt_tokens":99999999999999999999999}}"#),
            None
        );
        assert_eq!(scan(br#"{"usage":{"prompt_tokens":1 2}}"#), None);
        assert_eq!(scan(br#"{"usage":{prompt_tokens:1}}"#), None);
        assert_eq!(scan(br#"{"usage":{"prompt_tokens":1,}}"#), None);
        assert_eq!(scan(b"\"usage\"\"usage\":{{{{"), None);
        assert_eq!(scan(&[0xff; 100]), None);
        assert_eq!(Tail::default().scan(), None);
    }

    /// A huge body: only the end is kept and scanned, and usage there is found.
    #[test]
    fn huge_bodies() {
        let mut tail = Tail::default();
        let filler = Bytes::from(vec![b'x'; 1 << 20]);
        for _ in 0..8 {
            tail.push(&filler);
        }
        assert!(tail.earlier_len < KEEP + (1 << 20) + 1);
        tail.push(&Bytes::from_static(
            br#"","usage":{"prompt_tokens":5,"completion_tokens":6}}"#,
        ));
        assert_eq!(tail.scan(), usage(5, 6));
        // One huge chunk: the scan looks at its end only.
        let mut big = vec![b' '; 4 << 20];
        big.extend_from_slice(br#"{"usage":{"prompt_tokens":1,"completion_tokens":2}}"#);
        assert_eq!(tail_of(&[&big]).scan(), usage(1, 2));
        // Thousands of "usage" keys: bounded work, no answer.
        let many = b"\"usage\":1,".repeat(10_000);
        assert_eq!(scan(&many), None);
    }

    /// `"usage"` inside a string (escaped quotes) or nested deeper than the last member of
    /// the top-level value does not count; the real one, even before them, does.
    #[test]
    fn nested_and_quoted_usage_keys_are_ignored() {
        let quoted = br#"{"choices":[{"message":{"content":"say {\"usage\":{\"prompt_tokens\":999}}"}}],"usage":{"prompt_tokens":4,"completion_tokens":8}}"#;
        assert_eq!(scan(quoted), usage(4, 8));
        // The quoted one last: still ignored.
        let quoted_last = br#"{"usage":{"prompt_tokens":4,"completion_tokens":8},"note":"{\"usage\":{\"prompt_tokens\":999}}"}"#;
        assert_eq!(scan(quoted_last), usage(4, 8));
        // A nested object with a usage key after the top-level one.
        let nested = br#"{"usage":{"prompt_tokens":4,"completion_tokens":8},"tool":{"result":{"usage":{"prompt_tokens":999}}}}"#;
        assert_eq!(scan(nested), usage(4, 8));
        // Only a nested one: nothing.
        assert_eq!(scan(br#"{"a":{"b":{"usage":{"prompt_tokens":1}}}}"#), None);
        // A key that ends in `"usage` (its first quote escaped) is not `usage`.
        let escaped = br#"{"usage":{"prompt_tokens":2,"completion_tokens":3},"say \"usage":{"prompt_tokens":999}}"#;
        assert_eq!(scan(escaped), usage(2, 3));
    }

    /// The tail keeps at least KEEP bytes and drops older chunks beyond that.
    #[test]
    fn tail_is_bounded() {
        let mut tail = Tail::default();
        let chunk = Bytes::from(vec![b'a'; 1000]);
        for _ in 0..100 {
            tail.push(&chunk);
        }
        let kept = tail.earlier_len + 1000;
        assert!((KEEP..KEEP + 1000).contains(&kept), "{kept}");
        assert!(tail.earlier.len() <= MAX_CHUNKS + 1);
    }
}
