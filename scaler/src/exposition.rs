//! Reading one gauge out of a worker's `/metrics` page (Prometheus text exposition format).
//!
//! This is a small hand-written reader rather than a parser crate. `prometheus-parse` rejects
//! the colons in names such as `vllm:num_requests_waiting`; `prom_text_format_parser` 0.1
//! accepts them but parses the page as a whole, so one line it does not like (a stray log
//! line, a CRLF line ending) loses every metric of the scrape, and it brings `derive_more`,
//! `strum` and an old `winnow` along. Here each line stands alone: only the lines of the
//! metric asked for are parsed, and a line of any other metric cannot hurt.

/// The sum of every sample of the metric `name`, whatever its labels: the demand of a
/// worker whose engine splits a gauge by model or engine (`vllm:num_requests_waiting`,
/// `sglang:num_queue_reqs`, `nv_inference_pending_request_count`, …).
///
/// `name` must match exactly (`foo` does not match `foo_bucket`). NaN samples are skipped.
/// `None` when the metric has no sample other than NaN, or when a line of that metric is
/// malformed (the value would be a guess).
pub fn gauge_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `name` is only a prefix when the line's name goes on (`name_bucket`, `name:x`).
        if rest.starts_with(|c: char| is_name_char(c)) {
            continue;
        }
        let value = sample_value(rest)?;
        if !value.is_nan() {
            sum = Some(sum.unwrap_or(0.0) + value);
        }
    }
    sum
}

/// Whether `c` may appear in a metric name after its first character.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The value of a sample line from just after its name: optional labels, the value, an
/// optional timestamp, and (OpenMetrics) an optional exemplar after `#`.
fn sample_value(rest: &str) -> Option<f64> {
    let rest = rest.trim_start();
    let rest = match rest.strip_prefix('{') {
        Some(labels) => skip_labels(labels)?,
        None => rest,
    };
    // After labels the separator may be missing (`name{a="b"}1` is accepted by Prometheus);
    // after a bare name `is_name_char` already guaranteed it.
    let mut fields = rest.split_whitespace();
    let value = parse_float(fields.next()?)?;
    match fields.next() {
        None => {}
        Some(exemplar) if exemplar.starts_with('#') => return Some(value),
        // A timestamp: milliseconds, an integer in the classic format, a float in
        // OpenMetrics. Only checked, not used.
        Some(timestamp) => {
            parse_float(timestamp).filter(|t| t.is_finite())?;
            match fields.next() {
                None => {}
                Some(exemplar) if exemplar.starts_with('#') => {}
                Some(_) => return None,
            }
        }
    }
    Some(value)
}

/// Skips `key="value",…}` (the `{` already consumed) and returns what follows the `}`.
/// Values may hold any character, with `\\`, `\"` and `\n` escaped.
fn skip_labels(mut s: &str) -> Option<&str> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some(after);
        }
        // Label name.
        let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
        if end == 0 || s.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        s = s[end..].trim_start().strip_prefix('=')?.trim_start();
        s = s.strip_prefix('"')?;
        // Label value: up to the first quote not escaped.
        let mut chars = s.char_indices();
        let close = loop {
            match chars.next()? {
                (_, '\\') => {
                    chars.next()?;
                }
                (i, '"') => break i,
                _ => {}
            }
        };
        s = s[close + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

/// A float as Go's `ParseFloat` writes them: decimal, `NaN`, `+Inf`, `-Inf`.
fn parse_float(s: &str) -> Option<f64> {
    // Rust's parser also takes `inf`, `infinity` and `nan` in any case, a superset of
    // what exporters write; it rejects the hex floats Go would take, which no exporter
    // emits.
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests;
