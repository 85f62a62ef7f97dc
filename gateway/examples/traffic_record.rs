//! What recording traffic costs on the data plane: `Traffic::record` on one thread and on
//! one thread per core at once, the usage scan at the end of a chat answer, and a read of
//! the last minute.
//!
//! `cargo run --release -p gateway --example traffic_record` prints nanoseconds per call.
//! A measurement, not a test: nothing here asserts a speed.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use gateway::traffic::usage::Tail;
use gateway::traffic::{Sample, Traffic, Usage};

const CALLS: u64 = 2_000_000;

fn record(traffic: &Traffic, caller: &Arc<str>, calls: u64) -> f64 {
    let start = Instant::now();
    let base = SystemTime::now();
    for i in 0..calls {
        traffic.record(black_box(&Sample {
            // A new millisecond every 1,000 calls, as a busy endpoint sees.
            at: base + Duration::from_micros(i),
            status: if i % 50 == 0 { 503 } else { 200 },
            duration: Duration::from_micros(200 + i % 5_000),
            bytes_in: 300,
            bytes_out: 900,
            caller: Some(caller),
            usage: (i % 2 == 0).then_some(Usage {
                prompt_tokens: 12,
                completion_tokens: 34,
            }),
        }));
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn main() {
    let caller: Arc<str> = Arc::from("ci");
    let traffic = Arc::new(Traffic::new("bench"));
    // Warm-up: the shard and the caller entry exist from here on, as in steady state.
    record(&traffic, &caller, 10_000);
    println!(
        "record, 1 thread:          {:6.1} ns/call",
        record(&traffic, &caller, CALLS)
    );

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let traffic = Arc::clone(&traffic);
                let caller = Arc::clone(&caller);
                scope.spawn(move || record(&traffic, &caller, CALLS))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(f64::NAN))
            .collect()
    });
    let mean = per_thread.iter().sum::<f64>() / per_thread.len() as f64;
    println!("record, {threads} threads at once: {mean:6.1} ns/call per thread");

    let with_usage = Bytes::from_static(
        br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}"#,
    );
    let without =
        Bytes::from_static(br#"{"status":"ok","items":[1,2,3],"message":"a small JSON answer"}"#);
    for (what, answer) in [("with usage", with_usage), ("without usage", without)] {
        let start = Instant::now();
        for _ in 0..CALLS / 10 {
            let mut tail = Tail::default();
            tail.push(black_box(&answer));
            black_box(tail.scan());
        }
        let scan = start.elapsed().as_nanos() as f64 / (CALLS / 10) as f64;
        println!(
            "usage tail + scan, JSON {what} ({} B): {scan:6.1} ns",
            answer.len()
        );
    }

    let start = Instant::now();
    for _ in 0..10_000 {
        black_box(traffic.last_minute());
    }
    let read = start.elapsed().as_nanos() as f64 / 10_000.0;
    println!("last_minute():             {:6.1} µs/call", read / 1000.0);
}
