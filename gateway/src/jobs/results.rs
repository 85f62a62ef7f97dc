//! The result store ("EOS"): result documents written with `object_store` to an
//! S3-compatible bucket or a local directory, at `api/<endpoint>/request/<id>.json` below the
//! configured prefix.
//!
//! The key is a function of the request id alone, so a job that runs twice (at-least-once
//! delivery) writes the same object, and a redelivered job can tell its result exists.

use std::path::{Component, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};

use crate::config;

/// Where result documents go.
#[derive(Debug)]
pub struct Results {
    store: Arc<dyn ObjectStore>,
    /// The key prefix inside the store (empty for a local directory).
    prefix: String,
    /// The store's URL as clients see it, without a trailing `/`: `s3://bucket/prefix` or
    /// `file:///abs/dir`.
    base_url: String,
    /// The directory of a local store, whose writes Portico makes durable itself.
    local: Option<PathBuf>,
}

/// The store could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("object_store: {0}")]
pub struct StoreError(String);

impl Results {
    /// Opens the store of `[object_store]`. S3 credentials come from the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, …).
    pub fn open(settings: &config::ObjectStore) -> Result<Results, StoreError> {
        if let Some(path) = settings.url.strip_prefix("file://") {
            let dir = normalize(PathBuf::from(path));
            std::fs::create_dir_all(&dir)
                .map_err(|err| StoreError(format!("{}: {err}", dir.display())))?;
            let store = LocalFileSystem::new_with_prefix(&dir)
                .map_err(|err| StoreError(err.to_string()))?;
            return Ok(Results {
                store: Arc::new(store),
                prefix: String::new(),
                base_url: format!("file://{}", dir.display())
                    .trim_end_matches('/')
                    .into(),
                local: Some(dir),
            });
        }
        let rest = settings
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| StoreError(format!("unsupported url {}", settings.url)))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/').to_string();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&settings.region)
            // Portico retries writes itself, with its own back-off and metrics, and never
            // gives up on a result: one short try per call keeps an outage visible.
            .with_retry(RetryConfig {
                max_retries: 1,
                retry_timeout: Duration::from_secs(10),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(30)),
            );
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder.build().map_err(|err| StoreError(err.to_string()))?;
        let base_url = match prefix.is_empty() {
            true => format!("s3://{bucket}"),
            false => format!("s3://{bucket}/{prefix}"),
        };
        Ok(Results {
            store: Arc::new(store),
            prefix,
            base_url,
            local: None,
        })
    }

    /// The full URL of a request's result, as the 202 announces it.
    pub fn location(&self, endpoint: &str, id: &str) -> String {
        format!("{}/{}", self.base_url, relative_key(endpoint, id))
    }

    /// Writes a result document (replacing any earlier one: the same request id always
    /// gets the same key). Once this returns, the result survives a crash of the machine:
    /// S3 acknowledges stored objects, and a local file is fsync'd with its directory
    /// (the local store only writes a temporary file and renames it).
    pub async fn put(&self, endpoint: &str, id: &str, document: Bytes) -> Result<(), String> {
        self.store
            .put(&self.key(endpoint, id), PutPayload::from(document))
            .await
            .map_err(|err| err.to_string())?;
        let Some(dir) = &self.local else {
            return Ok(());
        };
        let file = dir.join(relative_key(endpoint, id));
        tokio::task::spawn_blocking(move || sync(&file))
            .await
            .map_err(|err| err.to_string())?
            .map_err(|err| format!("fsync of the result file: {err}"))
    }

    /// The result document, if one was written.
    pub async fn get(&self, endpoint: &str, id: &str) -> Result<Option<Bytes>, String> {
        match self.store.get(&self.key(endpoint, id)).await {
            Ok(found) => found.bytes().await.map(Some).map_err(|e| e.to_string()),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.to_string()),
        }
    }

    fn key(&self, endpoint: &str, id: &str) -> Path {
        match self.prefix.is_empty() {
            true => Path::from(relative_key(endpoint, id)),
            false => Path::from(format!("{}/{}", self.prefix, relative_key(endpoint, id))),
        }
    }
}

/// Flushes `file` and its directory entry to disk.
fn sync(file: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    match file.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// `api/<endpoint>/request/<id>.json` (DESIGN.md §5).
fn relative_key(endpoint: &str, id: &str) -> String {
    format!("api/{endpoint}/request/{id}.json")
}

/// Drops `.` components (config paths are resolved as `<config dir>/./data/results`), so
/// that announced locations read cleanly.
fn normalize(path: PathBuf) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> config::ObjectStore {
        config::ObjectStore {
            url: url.into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            region: "us-east-1".into(),
        }
    }

    /// Locations name the bucket, the prefix and the deterministic key.
    #[test]
    fn s3_locations() {
        let results = Results::open(&settings("s3://bucket/some/prefix/")).unwrap();
        assert_eq!(
            results.location("chat", "0192"),
            "s3://bucket/some/prefix/api/chat/request/0192.json"
        );
        assert_eq!(
            results.key("chat", "0192").as_ref(),
            "some/prefix/api/chat/request/0192.json"
        );
        let bare = Results::open(&settings("s3://bucket")).unwrap();
        assert_eq!(bare.location("e", "1"), "s3://bucket/api/e/request/1.json");
    }

    /// A local store writes files where the location says, and reads them back.
    #[tokio::test]
    async fn local_files() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/./results", dir.path().display());
        let results = Results::open(&settings(&url)).unwrap();
        let location = results.location("chat", "abc");
        let path = location.strip_prefix("file://").unwrap();
        assert!(!path.contains("/./"), "{path}");
        assert_eq!(results.get("chat", "abc").await.unwrap(), None);
        results
            .put("chat", "abc", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"{}");
        assert_eq!(
            results.get("chat", "abc").await.unwrap(),
            Some(Bytes::from_static(b"{}"))
        );
    }
}
