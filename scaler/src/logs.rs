//! What workers print: one bounded ring of lines per replica, kept across restarts of that
//! replica, plus a broadcast channel for following them live.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use tokio::sync::broadcast;

/// How many lines a live follower may fall behind before it misses some.
const FOLLOW_CAPACITY: usize = 1024;

/// Which of a worker's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line a worker printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The replica that printed it.
    pub replica: u32,
    /// When Portico read it.
    pub time: SystemTime,
    /// Standard output or standard error.
    pub stream: LogStream,
    /// The line, without its line ending; invalid UTF-8 replaced, long lines cut short.
    pub text: String,
}

/// The lines of one replica, oldest first, within both caps.
#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
}

/// Every replica's ring, and the live channel.
#[derive(Debug)]
pub(crate) struct LogBook {
    rings: Mutex<BTreeMap<u32, Ring>>,
    max_lines: usize,
    max_bytes: usize,
    live: broadcast::Sender<LogLine>,
}

impl LogBook {
    /// Rings holding at most `max_lines` lines and `max_bytes` bytes of text per replica.
    pub(crate) fn new(max_lines: usize, max_bytes: usize) -> LogBook {
        let (live, _) = broadcast::channel(FOLLOW_CAPACITY);
        LogBook {
            rings: Mutex::new(BTreeMap::new()),
            max_lines,
            max_bytes,
            live,
        }
    }

    /// Adds a line to its replica's ring (dropping the oldest lines past either cap) and
    /// hands it to live followers.
    pub(crate) fn push(&self, line: LogLine) {
        {
            let mut rings = self.rings();
            let ring = rings.entry(line.replica).or_default();
            ring.bytes += line.text.len();
            ring.lines.push_back(line.clone());
            // The newest line stays even when it alone is over the byte cap: a ring that
            // holds nothing would hide the one line that says why a worker died.
            while ring.lines.len() > self.max_lines
                || (ring.bytes > self.max_bytes && ring.lines.len() > 1)
            {
                match ring.lines.pop_front() {
                    Some(old) => ring.bytes -= old.text.len(),
                    None => break,
                }
            }
        }
        // No follower is not an error.
        let _ = self.live.send(line);
    }

    /// The last `lines` lines of `replica` (of every replica, merged by time, when `None`)
    /// printed at or after `since`, oldest first.
    pub(crate) fn tail(
        &self,
        replica: Option<u32>,
        lines: usize,
        since: Option<SystemTime>,
    ) -> Vec<LogLine> {
        let keep = |line: &&LogLine| since.is_none_or(|since| line.time >= since);
        let rings = self.rings();
        let mut out: Vec<LogLine> = match replica {
            Some(id) => rings
                .get(&id)
                .map(|ring| ring.lines.iter().filter(keep).cloned().collect())
                .unwrap_or_default(),
            None => {
                let mut all: Vec<LogLine> = rings
                    .values()
                    .flat_map(|ring| ring.lines.iter().filter(keep).cloned())
                    .collect();
                // Stable: lines of one replica read at the same instant keep their order.
                all.sort_by_key(|line| line.time);
                all
            }
        };
        let skip = out.len().saturating_sub(lines);
        out.drain(..skip);
        out
    }

    /// A receiver of every line pushed from now on.
    pub(crate) fn follow(&self) -> broadcast::Receiver<LogLine> {
        self.live.subscribe()
    }

    fn rings(&self) -> MutexGuard<'_, BTreeMap<u32, Ring>> {
        // A panic while holding the lock cannot leave a ring half-updated in a way that
        // matters (at worst a byte count is off), so keep serving logs.
        self.rings.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn line(replica: u32, secs: u64, text: &str) -> LogLine {
        LogLine {
            replica,
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            stream: LogStream::Stdout,
            text: text.to_string(),
        }
    }

    fn texts(lines: &[LogLine]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    /// Past the line cap, the oldest lines go.
    #[test]
    fn line_cap_drops_oldest() {
        let book = LogBook::new(3, 1 << 20);
        for i in 0..5 {
            book.push(line(0, i, &format!("l{i}")));
        }
        assert_eq!(texts(&book.tail(Some(0), 10, None)), ["l2", "l3", "l4"]);
    }

    /// Past the byte cap, the oldest lines go, but the newest always stays.
    #[test]
    fn byte_cap_drops_oldest_keeps_newest() {
        let book = LogBook::new(100, 10);
        book.push(line(0, 1, "aaaa"));
        book.push(line(0, 2, "bbbb"));
        book.push(line(0, 3, "cccc"));
        assert_eq!(texts(&book.tail(Some(0), 10, None)), ["bbbb", "cccc"]);
        book.push(line(0, 4, "a line longer than the cap"));
        assert_eq!(
            texts(&book.tail(Some(0), 10, None)),
            ["a line longer than the cap"]
        );
    }

    /// All replicas merge by time; `lines` keeps the newest; `since` filters.
    #[test]
    fn tail_merges_limits_and_filters() {
        let book = LogBook::new(100, 1 << 20);
        book.push(line(0, 1, "a1"));
        book.push(line(1, 2, "b2"));
        book.push(line(0, 3, "a3"));
        book.push(line(1, 4, "b4"));
        assert_eq!(texts(&book.tail(None, 10, None)), ["a1", "b2", "a3", "b4"]);
        assert_eq!(texts(&book.tail(None, 2, None)), ["a3", "b4"]);
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs(2);
        assert_eq!(texts(&book.tail(None, 10, Some(since))), ["b2", "a3", "b4"]);
        assert_eq!(texts(&book.tail(Some(1), 10, None)), ["b2", "b4"]);
        assert!(book.tail(Some(7), 10, None).is_empty());
        assert!(book.tail(None, 0, None).is_empty());
    }

    /// Followers get lines pushed after they subscribed.
    #[test]
    fn follow_sees_new_lines() {
        let book = LogBook::new(10, 1 << 20);
        book.push(line(0, 1, "before"));
        let mut rx = book.follow();
        book.push(line(0, 2, "after"));
        assert_eq!(rx.try_recv().map(|l| l.text).ok().as_deref(), Some("after"));
        assert!(rx.try_recv().is_err());
    }
}
