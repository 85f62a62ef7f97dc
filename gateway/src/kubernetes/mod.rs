//! Workers on Kubernetes (`kind = "kubernetes"`): a Deployment or StatefulSet scaled through
//! its `scale` subresource, its ready pods found in its Service's EndpointSlices (listed,
//! then watched). A small client over the API's JSON, with the pod's service account
//! (in-cluster) or any `api_server` (e.g. `kubectl proxy` for kubeconfig credentials).
//!
//! These are the only calls, and the RBAC rules they need (`deploy/kubernetes/` grants
//! exactly these; `tests/e2e/test_deploy.py` checks that):
//!
//! ```text
//! // rbac:begin
//! Rule { group: "apps", resources: &["deployments/scale", "statefulsets/scale"], verbs: &["get", "patch"] },
//! Rule { group: "discovery.k8s.io", resources: &["endpointslices"], verbs: &["list", "watch"] },
//! // rbac:end
//! ```
//!
//! Layout:
//! - `watch`: the EndpointSlices of the Service → the endpoint's workers.

mod watch;

use std::sync::Arc;

use scaler::ExternalActuator;
use serde_json::{Value, json};

use crate::config::KubernetesWorkers;

pub use watch::spawn as spawn_discovery;

/// Why a call to the API server failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No `api_server` and no in-cluster environment.
    #[error(
        "no API server: set api_server, or run in a pod (KUBERNETES_SERVICE_HOST and \
         KUBERNETES_SERVICE_PORT)"
    )]
    NoServer,
    /// The CA file could not be used.
    #[error("ca_file {path}: {reason}")]
    Ca {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The request failed on the way.
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    /// The API server refused (status and its message).
    #[error("{method} {path}: {status} {message}")]
    Status {
        /// The method.
        method: &'static str,
        /// The path asked.
        path: String,
        /// The status code.
        status: u16,
        /// The `message` of the API's Status object, or the body.
        message: String,
    },
}

/// A client of one API server, for one endpoint's workload.
#[derive(Debug, Clone)]
pub struct Kube {
    http: reqwest::Client,
    base: String,
    settings: Arc<KubernetesWorkers>,
}

impl Kube {
    /// A client for `settings` (the CA is read now; the token at each call).
    pub fn new(settings: &KubernetesWorkers) -> Result<Kube, KubeError> {
        let base = match &settings.api_server {
            Some(uri) => uri.to_string().trim_end_matches('/').to_string(),
            None => {
                let host =
                    std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| KubeError::NoServer)?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                format!("https://{host}:{port}")
            }
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .user_agent(concat!("portico/", env!("CARGO_PKG_VERSION")));
        if let Ok(pem) = std::fs::read(&settings.ca_file) {
            let ca = reqwest::Certificate::from_pem(&pem).map_err(|err| KubeError::Ca {
                path: settings.ca_file.display().to_string(),
                reason: err.to_string(),
            })?;
            builder = builder.add_root_certificate(ca);
        }
        Ok(Kube {
            http: builder.build()?,
            base,
            settings: Arc::new(settings.clone()),
        })
    }

    fn scale_path(&self) -> String {
        let s = &self.settings;
        format!(
            "/apis/apps/v1/namespaces/{}/{}/{}/scale",
            s.namespace, s.resource, s.name
        )
    }

    /// The path of the Service's EndpointSlices (list; `&watch=1…` to watch).
    fn slices_path(&self) -> String {
        let s = &self.settings;
        format!(
            "/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{}",
            s.namespace, s.service
        )
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        // Read at each call: projected service-account tokens are rotated.
        match std::fs::read_to_string(&self.settings.token_file) {
            Ok(token) if !token.trim().is_empty() => request.bearer_auth(token.trim()),
            _ => request,
        }
    }

    async fn json(
        &self,
        method: &'static str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, KubeError> {
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        Err(KubeError::Status {
            method,
            path: path.to_string(),
            status: status.as_u16(),
            message: body["message"].as_str().unwrap_or("").to_string(),
        })
    }

    /// The workload's replica count (`spec.replicas` of its scale subresource).
    pub async fn replicas(&self) -> Result<u32, KubeError> {
        let path = self.scale_path();
        let request = self
            .request(reqwest::Method::GET, &path)
            .timeout(std::time::Duration::from_secs(10));
        let scale = self.json("GET", &path, request).await?;
        Ok(scale["spec"]["replicas"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0))
    }

    /// Sets the workload's replica count.
    pub async fn scale(&self, replicas: u32) -> Result<(), KubeError> {
        let path = self.scale_path();
        let request = self
            .request(reqwest::Method::PATCH, &path)
            .timeout(std::time::Duration::from_secs(10))
            .header("content-type", "application/merge-patch+json")
            .body(json!({"spec": {"replicas": replicas}}).to_string());
        self.json("PATCH", &path, request).await.map(|_| ())
    }
}

/// The actuator of a `kubernetes` endpoint: each new count is read against the scale
/// subresource and patched when it differs; failures are logged and retried.
pub fn actuator(endpoint: &str, settings: &KubernetesWorkers) -> Arc<ExternalActuator> {
    let kube = Kube::new(settings).map_err(|err| err.to_string());
    let endpoint: Arc<str> = endpoint.into();
    ExternalActuator::start(Arc::new(move |replicas| {
        let kube = kube.clone();
        let endpoint = Arc::clone(&endpoint);
        Box::pin(async move {
            let kube = match kube {
                Ok(kube) => kube,
                Err(err) => {
                    tracing::warn!(%endpoint, error = %err, "kubernetes: cannot scale");
                    return false;
                }
            };
            let done = async {
                if kube.replicas().await? != replicas {
                    kube.scale(replicas).await?;
                    tracing::info!(%endpoint, replicas, workload = %kube.settings.name, "kubernetes: scaled");
                }
                Ok::<(), KubeError>(())
            };
            match done.await {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(%endpoint, replicas, error = %err, "kubernetes: scaling failed; trying again");
                    false
                }
            }
        })
    }))
}
