//! The persistent side: the `traffic_hours` table of the embedded store.
//!
//! Rows: key `(endpoint id, hour)` (hours since the Unix epoch, UTC), value one hour as
//! compact JSON ([`Stored`]). Writes are deltas: the flusher adds what it drained since the
//! last write to the stored row in one read-modify-write transaction, so two `Traffic`
//! values of one endpoint (an old and a new one around a reload) both count. Rows older
//! than the retention are deleted by the same transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use redb::{Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};

use super::hourly::{Caller, CallerCount, Hour};
use crate::store::Store;

/// `(endpoint, hour)` → the hour's JSON.
const HOURS: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("traffic_hours");

/// One hour as stored.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    requests: u64,
    #[serde(default)]
    client_errors: u64,
    #[serde(default)]
    server_errors: u64,
    #[serde(default)]
    bytes_in: u64,
    #[serde(default)]
    bytes_out: u64,
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    /// Non-empty latency buckets: `[index, count]`.
    #[serde(default)]
    latency: Vec<(u16, u32)>,
    #[serde(default)]
    callers: Vec<StoredCaller>,
}

/// One caller of a stored hour: `token` names it; without a token it is anonymous, or
/// the overflow of callers past the bound when `other` is set.
#[derive(Debug, Serialize, Deserialize)]
struct StoredCaller {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    other: bool,
    #[serde(default)]
    requests: u64,
    #[serde(default)]
    errors: u64,
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// The hour as stored.
pub fn encode(hour: &Hour) -> Vec<u8> {
    let callers = hour
        .callers
        .iter()
        .map(|(caller, count)| StoredCaller {
            token: match &caller {
                Caller::Token(name) => Some(name.to_string()),
                _ => None,
            },
            other: caller == Caller::Other,
            requests: count.requests,
            errors: count.errors,
            prompt_tokens: count.prompt_tokens,
            completion_tokens: count.completion_tokens,
        })
        .collect();
    let stored = Stored {
        requests: hour.requests,
        client_errors: hour.client_errors,
        server_errors: hour.server_errors,
        bytes_in: hour.bytes_in,
        bytes_out: hour.bytes_out,
        prompt_tokens: hour.prompt_tokens,
        completion_tokens: hour.completion_tokens,
        latency: hour.latency.sparse(),
        callers,
    };
    // Serializing plain structs of numbers and strings into a Vec cannot fail.
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// A stored hour.
pub fn decode(bytes: &[u8]) -> Result<Hour, serde_json::Error> {
    let stored: Stored = serde_json::from_slice(bytes)?;
    let mut hour = Hour {
        requests: stored.requests,
        client_errors: stored.client_errors,
        server_errors: stored.server_errors,
        bytes_in: stored.bytes_in,
        bytes_out: stored.bytes_out,
        prompt_tokens: stored.prompt_tokens,
        completion_tokens: stored.completion_tokens,
        ..Hour::default()
    };
    hour.latency.add_sparse(&stored.latency);
    for caller in stored.callers {
        let name = match (caller.token, caller.other) {
            (Some(token), _) => Caller::Token(Arc::from(token)),
            (None, true) => Caller::Other,
            (None, false) => Caller::Anonymous,
        };
        let count = CallerCount {
            requests: caller.requests,
            errors: caller.errors,
            prompt_tokens: caller.prompt_tokens,
            completion_tokens: caller.completion_tokens,
        };
        hour.callers.add(&name, &count);
    }
    Ok(hour)
}

/// `endpoint`'s stored hours from `from_hour` on.
pub fn load(
    store: &Store,
    endpoint: &str,
    from_hour: u64,
) -> Result<BTreeMap<u64, Hour>, redb::Error> {
    let tx = store.db().begin_read()?;
    let table = match tx.open_table(HOURS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
        Err(err) => return Err(err.into()),
    };
    let mut hours = BTreeMap::new();
    for row in table.range((endpoint, from_hour)..=(endpoint, u64::MAX))? {
        let (key, value) = row?;
        let (_, hour) = key.value();
        match decode(value.value()) {
            Ok(counted) => {
                hours.insert(hour, counted);
            }
            Err(err) => tracing::warn!(
                endpoint,
                hour,
                error = %err,
                "traffic: skipping an unreadable stored hour"
            ),
        }
    }
    Ok(hours)
}

/// Adds `deltas` to `endpoint`'s stored hours and deletes its hours before `cutoff_hour`,
/// in one durable transaction.
pub fn save(
    store: &Store,
    endpoint: &str,
    deltas: &BTreeMap<u64, Hour>,
    cutoff_hour: u64,
) -> Result<(), redb::Error> {
    let mut tx = store.db().begin_write()?;
    tx.set_durability(Durability::Immediate)?;
    {
        let mut table = tx.open_table(HOURS)?;
        for (&hour, delta) in deltas.range(cutoff_hour..) {
            let mut total = match table.get((endpoint, hour))? {
                Some(stored) => decode(stored.value()).unwrap_or_else(|err| {
                    tracing::warn!(
                        endpoint,
                        hour,
                        error = %err,
                        "traffic: replacing an unreadable stored hour"
                    );
                    Hour::default()
                }),
                None => Hour::default(),
            };
            total.merge(delta);
            table.insert((endpoint, hour), encode(&total).as_slice())?;
        }
        let mut old = Vec::new();
        for row in table.range((endpoint, 0)..(endpoint, cutoff_hour))? {
            old.push(row?.0.value().1);
        }
        for hour in old {
            table.remove((endpoint, hour))?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::traffic::{Sample, Usage};

    /// An hour survives encoding: counts, latency buckets, every kind of caller.
    #[test]
    fn encoding_round_trip() {
        let ci: Arc<str> = Arc::from("ci");
        let mut hour = Hour::default();
        let at = UNIX_EPOCH + Duration::from_secs(7200);
        for (status, caller) in [(200, Some(&ci)), (500, None), (404, Some(&ci))] {
            hour.record(
                &Sample {
                    at,
                    status,
                    duration: Duration::from_millis(3),
                    bytes_in: 1,
                    bytes_out: 2,
                    caller,
                    usage: Some(Usage {
                        prompt_tokens: 5,
                        completion_tokens: 1,
                    }),
                },
                3_000,
            );
        }
        hour.callers.add(
            &Caller::Other,
            &CallerCount {
                requests: 1,
                ..CallerCount::default()
            },
        );
        let back = decode(&encode(&hour)).unwrap();
        assert_eq!(encode(&back), encode(&hour));
        assert_eq!(back.latency, hour.latency);
        let mut callers: Vec<_> = back.callers.iter().collect();
        callers.sort();
        let mut expected: Vec<_> = hour.callers.iter().collect();
        expected.sort();
        assert_eq!(callers, expected);
        assert_eq!(back.requests, 3);
        assert_eq!(back.prompt_tokens, 15);
        assert!(decode(b"{not json").is_err());
    }
}
