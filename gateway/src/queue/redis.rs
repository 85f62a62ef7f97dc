//! The Redis Streams queue, shared by several Portico replicas (being written).

use std::time::Duration;

use super::QueueError;

/// Jobs in Redis Streams: one stream and consumer group per endpoint.
#[derive(Debug, Clone)]
pub struct RedisQueue {
    _reclaim_after: Duration,
}

impl RedisQueue {
    /// Connects to the Redis server at `url`.
    pub async fn connect(url: &str, reclaim_after: Duration) -> Result<RedisQueue, QueueError> {
        let _ = (url, reclaim_after);
        Err(QueueError::Storage("the Redis queue is not built yet".into()))
    }
}
