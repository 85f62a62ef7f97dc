//! Tests of recording, the minute, hour bucketing across shards and threads, retention,
//! and persistence through the embedded store.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::*;
use crate::config::Config;
use crate::endpoint::Endpoint;

/// 2026-11-23T20:00:00Z.
const HOUR: u64 = 498_740;

fn at(hour: u64, seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(hour * 3600 + seconds)
}

fn sample(
    at: SystemTime,
    status: u16,
    millis: u64,
    caller: Option<&Arc<str>>,
    usage: Option<Usage>,
) -> Sample<'_> {
    Sample {
        at,
        status,
        duration: Duration::from_millis(millis),
        bytes_in: 100,
        bytes_out: 1000,
        caller,
        usage,
    }
}

fn usage(prompt_tokens: u64, completion_tokens: u64) -> Option<Usage> {
    Some(Usage {
        prompt_tokens,
        completion_tokens,
    })
}

fn caller(hour: &Hour, name: &str) -> CallerCount {
    hour.callers
        .iter()
        .find(|(c, _)| c.as_str() == name)
        .map(|(_, count)| count)
        .unwrap_or_default()
}

/// The minute counts 5xx as errors and 4xx as client errors, computes rates and
/// percentiles, and forgets requests older than a minute.
#[test]
fn last_minute_counts_and_forgets() {
    let traffic = Traffic::new("e");
    let empty = traffic.last_minute_at(at(HOUR, 30));
    assert_eq!(empty.requests, 0);
    assert_eq!(empty.error_rate, 0.0);
    assert_eq!(empty.p50_ms, None);
    for i in 0..20 {
        let status = match i {
            0..=1 => 503,
            2..=4 => 429,
            _ => 200,
        };
        traffic.record(&sample(at(HOUR, 10 + i), status, 100 + i * 10, None, None));
    }
    let now = at(HOUR, 40);
    let minute = traffic.last_minute_at(now);
    assert_eq!(minute.requests, 20);
    assert_eq!(minute.errors, 2);
    assert_eq!(minute.client_errors, 3);
    assert_eq!(minute.error_rate, 0.1);
    // At :40, a slot begins: the window is the eleven slots before it, 55 s.
    assert!((minute.rps - 20.0 / 55.0).abs() < 1e-9, "{}", minute.rps);
    let p50 = minute.p50_ms.unwrap();
    let p95 = minute.p95_ms.unwrap();
    assert!((p50 - 190.0).abs() <= 190.0 * 0.125, "p50 {p50}");
    assert!((p95 - 280.0).abs() <= 280.0 * 0.125, "p95 {p95}");
    // 65 s after the last request, nothing is left.
    assert_eq!(traffic.last_minute_at(at(HOUR, 29 + 65)).requests, 0);
}

/// Requests are counted in the UTC hour they finished in, with bytes, usage and callers;
/// hours without requests are absent.
#[test]
fn hours_bucket_by_finish_time() {
    let traffic = Traffic::new("e");
    let ci: Arc<str> = Arc::from("ci");
    let web: Arc<str> = Arc::from("web");
    traffic.record(&sample(at(HOUR, 3599), 200, 5, Some(&ci), usage(10, 2)));
    traffic.record(&sample(at(HOUR + 1, 0), 500, 5, Some(&ci), None));
    traffic.record(&sample(at(HOUR + 1, 10), 200, 5, Some(&web), usage(3, 4)));
    traffic.record(&sample(at(HOUR + 1, 20), 401, 5, None, None));
    let hours = traffic.hours_at(HOUR - 5..=HOUR + 5, at(HOUR + 1, 30));
    assert_eq!(
        hours.iter().map(|(h, _)| *h).collect::<Vec<_>>(),
        [HOUR, HOUR + 1]
    );
    let (_, first) = &hours[0];
    assert_eq!(first.requests, 1);
    assert_eq!((first.prompt_tokens, first.completion_tokens), (10, 2));
    let (_, second) = &hours[1];
    assert_eq!(second.requests, 3);
    assert_eq!((second.client_errors, second.server_errors), (1, 1));
    assert_eq!((second.bytes_in, second.bytes_out), (300, 3000));
    assert_eq!(caller(second, "ci").errors, 1);
    assert_eq!(caller(second, "web").completion_tokens, 4);
    assert_eq!(caller(second, "anonymous").requests, 1);
    // Reading twice does not count twice.
    let again = traffic.hours_at(HOUR..=HOUR + 1, at(HOUR + 1, 30));
    assert_eq!(again[1].1.requests, 3);
    // A reversed range is empty, not a panic.
    let (from, to) = (HOUR + 1, HOUR);
    assert!(traffic.hours_at(from..=to, at(HOUR + 1, 30)).is_empty());
}

/// A shard not drained for hours keeps every hour apart (the two-slot ring spills), and
/// hours past the 720-hour retention are dropped.
#[test]
fn undrained_hours_spill_and_old_hours_expire() {
    let traffic = Traffic::new("e");
    for hour in [HOUR, HOUR + 1, HOUR + 2, HOUR + 3, HOUR + 3] {
        traffic.record(&sample(at(hour, 0), 200, 1, None, None));
    }
    let hours = traffic.hours_at(0..=u64::MAX, at(HOUR + 3, 0));
    let counts: Vec<(u64, u64)> = hours.iter().map(|(h, c)| (*h, c.requests)).collect();
    assert_eq!(
        counts,
        [(HOUR, 1), (HOUR + 1, 1), (HOUR + 2, 1), (HOUR + 3, 2)]
    );
    // 720 hours after HOUR + 1, only HOUR + 2 and later remain.
    let later = at(HOUR + 1 + RETENTION_HOURS, 0);
    let kept: Vec<u64> = traffic
        .hours_at(0..=u64::MAX, later)
        .iter()
        .map(|(h, _)| *h)
        .collect();
    assert_eq!(kept, [HOUR + 2, HOUR + 3]);
}

/// Several threads record at once (each on its own shard); readers see every request.
#[test]
fn threads_record_into_shards() {
    let traffic = Arc::new(Traffic::new("e"));
    let ci: Arc<str> = Arc::from("ci");
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let traffic = Arc::clone(&traffic);
            let ci = Arc::clone(&ci);
            scope.spawn(move || {
                for i in 0..1000 {
                    let status = if i % 100 == 0 { 500 } else { 200 };
                    traffic.record(&sample(at(HOUR, t), status, 1, Some(&ci), usage(1, 1)));
                }
            });
        }
    });
    let minute = traffic.last_minute_at(at(HOUR, 10));
    assert_eq!((minute.requests, minute.errors), (4000, 40));
    let hours = traffic.hours_at(HOUR..=HOUR, at(HOUR, 10));
    let ci = caller(&hours[0].1, "ci");
    assert_eq!(
        ci,
        CallerCount {
            requests: 4000,
            errors: 40,
            prompt_tokens: 4000,
            completion_tokens: 4000
        }
    );
}

fn endpoint_config() -> Config {
    let text = "[server]\n[[listener]]\nname = \"public\"\naddress = \"127.0.0.1:0\"\n\
                [[project]]\nid = \"p\"\n\
                [[endpoint]]\nid = \"e1\"\nproject = \"p\"\n\
                [endpoint.workers]\nkind = \"static\"\nurls = [\"http://127.0.0.1:9\"]\n";
    Config::from_toml_str(text, Path::new(".")).expect("valid config")
}

fn fresh_endpoint(config: &Config) -> Endpoint {
    Endpoint::new(config, config.endpoints[0].clone(), &["public".to_string()])
}

/// Opens the store, retrying while a flusher round still holds the previous handle.
fn reopen(dir: &Path) -> Arc<Store> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Store::open(dir) {
            Ok(store) => return store,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                std::thread::yield_now();
            }
            Err(err) => panic!("{err}"),
        }
    }
}

/// Hours written by a flush come back in a fresh endpoint attached to the reopened store;
/// later flushes add to the stored hours instead of replacing them; another endpoint's
/// hours stay apart.
#[test]
fn persistence_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let config = endpoint_config();
    let ci: Arc<str> = Arc::from("ci");
    let now = SystemTime::now();
    let this_hour = current_hour(now);
    {
        let store = Store::open(dir.path()).unwrap();
        let endpoint = fresh_endpoint(&config);
        store.attach(&endpoint);
        endpoint
            .traffic
            .record(&sample(now, 200, 20, Some(&ci), usage(7, 9)));
        endpoint.traffic.record(&sample(now, 503, 40, None, None));
        let other = Traffic::new("other-endpoint");
        other.attach(&store);
        other.record(&sample(now, 200, 1, None, None));
        endpoint.traffic.flush().unwrap();
        other.flush().unwrap();
        // Flushing again with nothing new writes nothing more.
        endpoint.traffic.flush().unwrap();
    }
    let store = reopen(dir.path());
    let endpoint = fresh_endpoint(&config);
    store.attach(&endpoint);
    let hours = endpoint.traffic.hours(this_hour..=this_hour);
    assert_eq!(hours.len(), 1);
    let hour = &hours[0].1;
    assert_eq!(hour.requests, 2);
    assert_eq!(hour.server_errors, 1);
    assert_eq!((hour.bytes_in, hour.bytes_out), (200, 2000));
    assert_eq!((hour.prompt_tokens, hour.completion_tokens), (7, 9));
    assert_eq!(caller(hour, "ci").prompt_tokens, 7);
    assert_eq!(caller(hour, "anonymous").errors, 1);
    assert!(hour.latency.percentile_ms(0.95).unwrap() > 30.0);

    // More requests, flushed: the stored hour is the sum.
    endpoint
        .traffic
        .record(&sample(now, 200, 20, Some(&ci), usage(1, 1)));
    endpoint.traffic.flush().unwrap();
    drop(endpoint);
    drop(store);
    let store = reopen(dir.path());
    let endpoint = fresh_endpoint(&config);
    store.attach(&endpoint);
    let hours = endpoint.traffic.hours(this_hour..=this_hour);
    assert_eq!(hours[0].1.requests, 3);
    assert_eq!(caller(&hours[0].1, "ci").prompt_tokens, 8);
}

/// An endpoint dropped off the data plane writes what it still held.
#[test]
fn dropping_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let this_hour = current_hour(now);
    {
        let store = Store::open(dir.path()).unwrap();
        let traffic = Traffic::new("e");
        traffic.attach(&store);
        traffic.record(&sample(now, 200, 1, None, None));
    }
    let store = reopen(dir.path());
    let traffic = Traffic::new("e");
    traffic.attach(&store);
    let hours = traffic.hours(this_hour..=this_hour);
    assert_eq!(hours.first().map(|(_, h)| h.requests), Some(1));
}

/// A replacement attached while the old value lives (a reload) starts with the old one's
/// hours, and the hours of both reach the store exactly once.
#[test]
fn replacement_sees_the_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let this_hour = current_hour(now);
    let store = Store::open(dir.path()).unwrap();
    let old = Traffic::new("e");
    old.attach(&store);
    old.record(&sample(now, 200, 1, None, None));
    let new = Traffic::new("e");
    new.attach(&store);
    assert_eq!(new.hours(this_hour..=this_hour)[0].1.requests, 1);
    old.record(&sample(now, 200, 1, None, None));
    new.record(&sample(now, 200, 1, None, None));
    drop(old);
    drop(new);
    drop(store);
    let store = reopen(dir.path());
    let check = Traffic::new("e");
    check.attach(&store);
    assert_eq!(check.hours(this_hour..=this_hour)[0].1.requests, 3);
}
