//! `portico endpoint logs`: worker output as `time replica text` lines, and `--follow`, which
//! reads the admin API's server-sent events until the daemon ends the stream or the operator
//! presses Ctrl-C.

use std::io::Write as _;

use clap::Args;
use serde_json::Value;

use super::admin::{AdminClient, CliError};
use super::view::cell;

/// Arguments of `portico endpoint logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The endpoint.
    pub id: String,
    /// Only this replica's output.
    #[arg(long, value_name = "R")]
    pub replica: Option<u32>,
    /// At most this many lines (the newest); the daemon's default is 100.
    #[arg(long, value_name = "N")]
    pub lines: Option<usize>,
    /// Only lines from this long ago on: `30s`, `5m`, `2h`, `1d` (a bare number is seconds).
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub since: Option<u64>,
    /// Only lines matching this regular expression.
    #[arg(long, value_name = "RE")]
    pub filter: Option<String>,
    /// Keep printing new lines as the workers write them.
    #[arg(long, short)]
    pub follow: bool,
}

/// `30s`, `5m`, `2h`, `1d` or a bare number of seconds, as seconds.
pub fn parse_age(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let count: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 5m, 2h or 1d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?}: use s, m, h or d")),
    };
    count
        .checked_mul(scale)
        .ok_or_else(|| format!("{text} is too long"))
}

/// Prints the selected lines, then (with `--follow`) new ones until the stream ends.
pub async fn logs(client: &AdminClient, args: &LogsArgs, json: bool) -> Result<(), CliError> {
    let path = format!("/admin/endpoints/{}/logs", super::segment(&args.id));
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(replica) = args.replica {
        query.push(("replica", replica.to_string()));
    }
    if let Some(lines) = args.lines {
        query.push(("lines", lines.to_string()));
    }
    if let Some(since) = args.since {
        query.push(("since_seconds", since.to_string()));
    }
    if let Some(filter) = &args.filter {
        query.push(("filter", filter.clone()));
    }
    if !args.follow {
        let answer = client.get(&path, &query).await?;
        if json {
            super::print_json(&answer);
        } else {
            for line in answer["lines"].as_array().into_iter().flatten() {
                outln!("{}", line_text(line));
            }
        }
        return Ok(());
    }
    query.push(("follow", "true".into()));
    let mut response = client.stream(&path, &query).await?;
    let mut events = SseParser::default();
    let stdout = std::io::stdout();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            // The daemon ended the stream (it is stopping).
            Ok(None) => return Ok(()),
            Err(err) => {
                return Err(CliError::BadAnswer(format!(
                    "the log stream broke off: {}",
                    super::admin::innermost(&err)
                )));
            }
        };
        for data in events.push(&chunk) {
            let text = if json {
                data
            } else {
                match serde_json::from_str::<Value>(&data) {
                    Ok(line) => line_text(&line),
                    Err(_) => data,
                }
            };
            // Whoever reads our output has gone (`| head`): that ends the command quietly.
            if writeln!(stdout.lock(), "{text}").is_err() {
                return Ok(());
            }
        }
    }
}

/// `time replica text`.
fn line_text(line: &Value) -> String {
    format!(
        "{} {} {}",
        cell(&line["time"]),
        cell(&line["replica"]),
        line["line"].as_str().unwrap_or_default()
    )
}

/// Splits a server-sent event stream into the data of each event; comments and other
/// fields are skipped.
#[derive(Debug, Default)]
struct SseParser {
    /// Bytes after the last complete line.
    partial: Vec<u8>,
    /// `data:` lines of the event being read.
    data: Vec<String>,
}

impl SseParser {
    /// Feeds bytes; returns the data of every event they complete.
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(bytes);
        let mut complete = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    complete.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                self.data
                    .push(value.strip_prefix(' ').unwrap_or(value).to_owned());
            }
        }
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ages take s, m, h, d or nothing; anything else is refused.
    #[test]
    fn ages() {
        assert_eq!(parse_age("30s"), Ok(30));
        assert_eq!(parse_age("5m"), Ok(300));
        assert_eq!(parse_age("2h"), Ok(7200));
        assert_eq!(parse_age("1d"), Ok(86_400));
        assert_eq!(parse_age("45"), Ok(45));
        assert!(parse_age("5w").is_err());
        assert!(parse_age("m").is_err());
        assert!(parse_age("-5s").is_err());
        assert!(parse_age("99999999999999999999h").is_err());
    }

    /// Events split across chunks come out whole; comments are skipped.
    #[test]
    fn sse_events_across_chunks() {
        let mut parser = SseParser::default();
        assert!(parser.push(b": keep-alive\n\ndata: {\"a\"").is_empty());
        assert_eq!(parser.push(b":1}\n\ndata: x\r\n"), ["{\"a\":1}"]);
        assert_eq!(parser.push(b"data: y\n\n"), ["x\ny"]);
    }

    /// A log line reads `time replica text`.
    #[test]
    fn line_format() {
        let line = serde_json::json!({"time": "2026-01-01T00:00:00.5Z", "replica": 2,
                                      "stream": "stdout", "line": "hello world"});
        assert_eq!(line_text(&line), "2026-01-01T00:00:00.5Z 2 hello world");
    }
}
