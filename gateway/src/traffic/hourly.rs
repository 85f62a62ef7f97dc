//! One UTC hour of an endpoint's traffic: counts, bytes, token usage, a latency histogram,
//! and the same per caller, with at most [`MAX_CALLERS`] named callers (the rest are summed
//! as "other") so that a flood of distinct token names cannot grow memory without bound.

use std::collections::HashMap;
use std::sync::Arc;

use super::histogram::Histogram;
use super::{Sample, Usage};

/// Named callers kept apart per hour; more are summed under "other".
pub const MAX_CALLERS: usize = 1000;

/// What one caller did in an hour. `errors` counts 4xx and 5xx answers alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CallerCount {
    /// Requests finished.
    pub requests: u64,
    /// 4xx and 5xx answers.
    pub errors: u64,
    /// Prompt tokens reported by the worker.
    pub prompt_tokens: u64,
    /// Completion tokens reported by the worker.
    pub completion_tokens: u64,
}

impl CallerCount {
    /// Adds `other`.
    pub fn merge(&mut self, other: &CallerCount) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }

    /// Whether it counts nothing.
    pub fn is_zero(&self) -> bool {
        *self == CallerCount::default()
    }

    #[inline]
    fn add(&mut self, error: bool, usage: Option<Usage>) {
        self.requests += 1;
        self.errors += u64::from(error);
        if let Some(usage) = usage {
            self.prompt_tokens += usage.prompt_tokens;
            self.completion_tokens += usage.completion_tokens;
        }
    }
}

/// Who made requests, as the hourly breakdown names them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Caller {
    /// Requests without a project token (public endpoints, refused requests).
    Anonymous,
    /// Requests authenticated by the project token of this name.
    Token(Arc<str>),
    /// Named callers beyond [`MAX_CALLERS`] in one hour.
    Other,
}

impl Caller {
    /// The name shown: the token's name, `anonymous` or `other`.
    pub fn as_str(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Token(name) => name,
            Caller::Other => "other",
        }
    }
}

type Named = HashMap<Arc<str>, CallerCount, foldhash::fast::RandomState>;

/// The per-caller part of an hour.
#[derive(Debug, Clone, Default)]
pub struct Callers {
    anonymous: CallerCount,
    named: Named,
    other: CallerCount,
}

impl Callers {
    /// Counts one request of `caller`: one hash lookup when the caller is known.
    #[inline]
    fn count(&mut self, caller: Option<&Arc<str>>, error: bool, usage: Option<Usage>) {
        let Some(name) = caller else {
            self.anonymous.add(error, usage);
            return;
        };
        if let Some(count) = self.named.get_mut(&**name) {
            count.add(error, usage);
            return;
        }
        if self.named.len() >= MAX_CALLERS {
            self.other.add(error, usage);
            return;
        }
        self.named
            .entry(Arc::clone(name))
            .or_default()
            .add(error, usage);
    }

    /// The count of `caller`, creating it if there is room (else "other").
    fn slot(&mut self, caller: Option<&Arc<str>>) -> &mut CallerCount {
        let Some(name) = caller else {
            return &mut self.anonymous;
        };
        // Two lookups on a miss, so that a hit (the common case) clones nothing.
        if self.named.contains_key(&**name) {
            return self.named.get_mut(&**name).unwrap_or(&mut self.other);
        }
        if self.named.len() >= MAX_CALLERS {
            return &mut self.other;
        }
        self.named.entry(Arc::clone(name)).or_default()
    }

    /// Adds `count` to `caller`.
    pub fn add(&mut self, caller: &Caller, count: &CallerCount) {
        if count.is_zero() {
            return;
        }
        let slot = match caller {
            Caller::Anonymous => &mut self.anonymous,
            Caller::Other => &mut self.other,
            Caller::Token(name) => self.slot(Some(name)),
        };
        slot.merge(count);
    }

    /// Every caller with something counted, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Caller, CallerCount)> + '_ {
        let fixed = [
            (Caller::Anonymous, self.anonymous),
            (Caller::Other, self.other),
        ];
        self.named
            .iter()
            .map(|(name, count)| (Caller::Token(Arc::clone(name)), *count))
            .chain(fixed)
            .filter(|(_, count)| !count.is_zero())
    }

    /// Named callers kept apart (at most [`MAX_CALLERS`]).
    pub fn named_len(&self) -> usize {
        self.named.len()
    }
}

/// One hour of one endpoint (or the part of it one shard saw since its last drain).
#[derive(Debug, Clone, Default)]
pub struct Hour {
    /// Requests finished.
    pub requests: u64,
    /// 4xx answers.
    pub client_errors: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Prompt tokens reported by workers.
    pub prompt_tokens: u64,
    /// Completion tokens reported by workers.
    pub completion_tokens: u64,
    /// Durations, request to the end of the response.
    pub latency: Histogram,
    /// The same per caller.
    pub callers: Callers,
}

impl Hour {
    /// Counts one finished request.
    #[inline]
    pub fn record(&mut self, sample: &Sample<'_>, micros: u64) {
        self.requests += 1;
        let error = match sample.status {
            400..=499 => {
                self.client_errors += 1;
                true
            }
            500..=599 => {
                self.server_errors += 1;
                true
            }
            _ => false,
        };
        self.bytes_in += sample.bytes_in;
        self.bytes_out += sample.bytes_out;
        if let Some(usage) = sample.usage {
            self.prompt_tokens += usage.prompt_tokens;
            self.completion_tokens += usage.completion_tokens;
        }
        self.latency.record(micros);
        self.callers.count(sample.caller, error, sample.usage);
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.requests == 0
    }

    /// Adds everything `other` counted (its callers within the bound).
    pub fn merge(&mut self, other: &Hour) {
        self.add_counts(other);
        self.latency.merge(&other.latency);
        for (caller, count) in other.callers.iter() {
            self.callers.add(&caller, &count);
        }
    }

    /// Adds `other`'s counters (requests, errors, bytes, tokens): not its latency or
    /// callers.
    pub fn add_counts(&mut self, other: &Hour) {
        self.requests += other.requests;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }

    /// Moves what was counted out and leaves zeros, keeping the caller table's names and
    /// memory so that the next requests of the hour do not allocate.
    pub fn take(&mut self) -> Hour {
        let mut taken = Hour {
            requests: self.requests,
            client_errors: self.client_errors,
            server_errors: self.server_errors,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            latency: self.latency.clone(),
            callers: Callers {
                anonymous: self.callers.anonymous,
                named: Named::default(),
                other: self.callers.other,
            },
        };
        for (name, count) in &mut self.callers.named {
            if !count.is_zero() {
                taken.callers.named.insert(Arc::clone(name), *count);
                *count = CallerCount::default();
            }
        }
        self.requests = 0;
        self.client_errors = 0;
        self.server_errors = 0;
        self.bytes_in = 0;
        self.bytes_out = 0;
        self.prompt_tokens = 0;
        self.completion_tokens = 0;
        self.latency.clear();
        self.callers.anonymous = CallerCount::default();
        self.callers.other = CallerCount::default();
        taken
    }

    /// Empties the hour for reuse by a later one, keeping the caller table's memory.
    pub fn reset(&mut self) {
        self.take();
        self.callers.named.clear();
    }
}

/// The hour number (hours since the Unix epoch) of `unix_seconds`.
pub fn hour_of(unix_seconds: u64) -> u64 {
    unix_seconds / 3600
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn sample(status: u16, caller: Option<&Arc<str>>, usage: Option<Usage>) -> Sample<'_> {
        Sample {
            at: UNIX_EPOCH + Duration::from_secs(3600 * 500_000),
            status,
            duration: Duration::from_millis(10),
            bytes_in: 10,
            bytes_out: 100,
            caller,
            usage,
        }
    }

    /// Counts per status class and caller; a caller's errors are its 4xx and 5xx.
    #[test]
    fn counts_per_class_and_caller() {
        let ci: Arc<str> = Arc::from("ci");
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 5,
        };
        let mut hour = Hour::default();
        hour.record(&sample(200, Some(&ci), Some(usage)), 10_000);
        hour.record(&sample(404, Some(&ci), None), 10_000);
        hour.record(&sample(502, None, None), 10_000);
        hour.record(&sample(101, None, None), 10_000);
        assert_eq!(hour.requests, 4);
        assert_eq!((hour.client_errors, hour.server_errors), (1, 1));
        assert_eq!((hour.bytes_in, hour.bytes_out), (40, 400));
        assert_eq!((hour.prompt_tokens, hour.completion_tokens), (3, 5));
        let mut callers: Vec<_> = hour.callers.iter().collect();
        callers.sort();
        assert_eq!(
            callers,
            vec![
                (
                    Caller::Anonymous,
                    CallerCount {
                        requests: 2,
                        errors: 1,
                        ..CallerCount::default()
                    }
                ),
                (
                    Caller::Token(ci),
                    CallerCount {
                        requests: 2,
                        errors: 1,
                        prompt_tokens: 3,
                        completion_tokens: 5
                    }
                ),
            ]
        );
    }

    /// Past MAX_CALLERS distinct names, new names are summed as "other", in recording and
    /// in merging alike.
    #[test]
    fn callers_are_bounded() {
        let names: Vec<Arc<str>> = (0..MAX_CALLERS + 5)
            .map(|i| Arc::from(format!("t{i}")))
            .collect();
        let mut hour = Hour::default();
        for name in &names {
            hour.record(&sample(200, Some(name), None), 1);
        }
        // A known name still counts as itself once the table is full.
        hour.record(&sample(500, Some(&names[0]), None), 1);
        assert_eq!(hour.callers.named_len(), MAX_CALLERS);
        let other = hour
            .callers
            .iter()
            .find(|(c, _)| *c == Caller::Other)
            .unwrap()
            .1;
        assert_eq!(other.requests, 5);
        let first = hour
            .callers
            .iter()
            .find(|(c, _)| c.as_str() == "t0")
            .unwrap()
            .1;
        assert_eq!((first.requests, first.errors), (2, 1));

        let mut merged = Hour::default();
        merged.record(&sample(200, Some(&Arc::from("elsewhere")), None), 1);
        merged.merge(&hour);
        assert_eq!(merged.callers.named_len(), MAX_CALLERS);
        assert_eq!(merged.requests, MAX_CALLERS as u64 + 7);
        let total: u64 = merged.callers.iter().map(|(_, c)| c.requests).sum();
        assert_eq!(total, merged.requests);
    }

    /// `take` moves the counts out and leaves a zeroed hour that keeps counting.
    #[test]
    fn take_leaves_zeros() {
        let ci: Arc<str> = Arc::from("ci");
        let mut hour = Hour::default();
        hour.record(&sample(200, Some(&ci), None), 1);
        hour.record(&sample(200, None, None), 1);
        let taken = hour.take();
        assert_eq!(taken.requests, 2);
        assert_eq!(taken.callers.iter().count(), 2);
        assert!(hour.is_empty());
        assert_eq!(hour.callers.iter().count(), 0);
        assert!(hour.latency.is_empty());
        hour.record(&sample(200, Some(&ci), None), 1);
        let again = hour.take();
        assert_eq!(again.callers.iter().collect::<Vec<_>>().len(), 1);
        hour.reset();
        assert_eq!(hour.callers.named_len(), 0);
    }

    /// Hours are UTC hours since the epoch.
    #[test]
    fn hour_numbers() {
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(3599), 0);
        assert_eq!(hour_of(3600), 1);
        // 2026-11-23T20:00:00Z
        assert_eq!(hour_of(1_795_464_000), 498_740);
    }
}
