//! The admin API client the operator commands share: one base URL, an optional bearer token,
//! JSON in and out, and the one mapping from a failed call to a [`CliError`].

use std::time::Duration;

use clap::Args;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

/// How long connecting to the admin listener may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole answer may take (followed logs have no limit).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Options every command that talks to the admin API takes.
#[derive(Debug, Clone, Args)]
pub struct AdminOptions {
    /// Base URL of Portico's admin listener.
    #[arg(
        long = "admin",
        value_name = "URL",
        env = "PORTICO_ADMIN_URL",
        default_value = "http://127.0.0.1:9090",
        value_parser = parse_base_url,
        global = true,
        help_heading = "Admin API"
    )]
    pub url: Url,
    /// The admin bearer token (the one whose SHA-256 is `server.admin_token_sha256`).
    #[arg(
        long,
        env = "PORTICO_ADMIN_TOKEN",
        hide_env_values = true,
        global = true,
        help_heading = "Admin API"
    )]
    pub token: Option<String>,
    /// Print the API's JSON answer (pretty) instead of tables.
    #[arg(long, global = true, help_heading = "Admin API")]
    pub json: bool,
}

/// An `http(s)://` URL; paths are appended to it, so a trailing `/` is dropped.
fn parse_base_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim_end_matches('/'))
        .map_err(|err| format!("not a URL ({err}); expected e.g. http://127.0.0.1:9090"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("scheme {other}: is not http or https")),
    }
}

/// Why an operator command failed; [`CliError::exit_code`] says how the process exits.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line asks for something that cannot be done (exit 2).
    #[error("{0}")]
    Usage(String),
    /// No answer from the admin listener at all.
    #[error("cannot reach the admin API at {url}: {cause}")]
    Unreachable {
        /// The base URL tried.
        url: String,
        /// The innermost cause (refused, timed out, TLS, …).
        cause: String,
    },
    /// The admin API answered 401.
    #[error("admin token missing or rejected; pass --token or set PORTICO_ADMIN_TOKEN")]
    Unauthorized,
    /// The admin API refused the request: its `error.message`, and `error.problems` if any.
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// `error.message`, or a description of the answer when it has none.
        message: String,
        /// `error.problems`: one line each.
        problems: Vec<String>,
    },
    /// The answer could not be understood, or a followed stream broke off.
    #[error("unexpected answer from the admin API: {0}")]
    BadAnswer(String),
    /// The command could not set itself up (runtime, HTTP client).
    #[error("cannot start: {0}")]
    Setup(String),
}

impl CliError {
    /// 2 for usage errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }

    /// Writes the error to stderr: `portico: message`, then each problem on its own line.
    pub fn report(&self) {
        eprintln!("portico: {self}");
        if let CliError::Refused { problems, .. } = self {
            for problem in problems {
                eprintln!("  {problem}");
            }
        }
    }
}

/// A connection to one admin API.
#[derive(Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl AdminClient {
    /// A client for the admin API that `options` name.
    pub fn new(options: &AdminOptions) -> Result<AdminClient, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|err| CliError::Setup(format!("building the HTTP client: {err}")))?;
        Ok(AdminClient {
            http,
            base: options.url.clone(),
            token: options.token.clone(),
        })
    }

    /// `GET path` (with `query` pairs), answered with JSON.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        let response = self.send(Method::GET, path, query, None, true).await?;
        json(response).await
    }

    /// `POST path` with an optional JSON body, answered with JSON.
    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let response = self.send(Method::POST, path, &[], body, true).await?;
        json(response).await
    }

    /// `PATCH path` with a JSON body, answered with JSON.
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let response = self
            .send(Method::PATCH, path, &[], Some(body), true)
            .await?;
        json(response).await
    }

    /// `GET path` whose successful answer is read by the caller piece by piece (a server-sent
    /// event stream): no time limit on the answer.
    pub async fn stream(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<reqwest::Response, CliError> {
        self.send(Method::GET, path, query, None, false).await
    }

    /// Sends one request; a non-2xx answer becomes the error it describes.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        limited: bool,
    ) -> Result<reqwest::Response, CliError> {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path().trim_end_matches('/')));
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut request = self.http.request(method, url);
        if limited {
            request = request.timeout(ANSWER_TIMEOUT);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(CliError::Unauthorized);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|err| self.unreachable(&err))?;
        Err(refusal(status, &bytes))
    }

    fn unreachable(&self, err: &reqwest::Error) -> CliError {
        CliError::Unreachable {
            url: self.base.to_string().trim_end_matches('/').to_string(),
            cause: innermost(err),
        }
    }
}

/// The body of a successful answer, as JSON.
async fn json(response: reqwest::Response) -> Result<Value, CliError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|err| CliError::BadAnswer(format!("reading the answer: {}", innermost(&err))))?;
    serde_json::from_slice(&bytes)
        .map_err(|err| CliError::BadAnswer(format!("the answer is not JSON: {err}")))
}

/// The error a non-2xx answer describes: `error.message` and `error.problems` when the body
/// is the admin API's error JSON, the status line otherwise.
pub(crate) fn refusal(status: StatusCode, body: &[u8]) -> CliError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = &parsed["error"];
    let message = error["message"].as_str().map_or_else(
        || {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("the admin API answered {status}")
            } else {
                format!("the admin API answered {status}: {text}")
            }
        },
        str::to_owned,
    );
    let problems = error["problems"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    CliError::Refused {
        status: status.as_u16(),
        message,
        problems,
    }
}

/// The deepest cause of an error: "Connection refused (os error 111)" rather than reqwest's
/// "error sending request for url".
pub(crate) fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error body yields its message and each problem; other bodies yield the status.
    #[test]
    fn refusals_carry_message_and_problems() {
        let body =
            br#"{"error":{"message":"bad","type":"t","code":"c","problems":["a: x","b: y"]}}"#;
        match refusal(StatusCode::BAD_REQUEST, body) {
            CliError::Refused {
                status,
                message,
                problems,
            } => {
                assert_eq!(status, 400);
                assert_eq!(message, "bad");
                assert_eq!(problems, ["a: x", "b: y"]);
            }
            other => panic!("{other:?}"),
        }
        let plain = refusal(StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(
            plain.to_string(),
            "the admin API answered 502 Bad Gateway: upstream down"
        );
        assert_eq!(plain.exit_code(), 1);
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
    }

    /// Base URLs lose a trailing slash; other schemes are refused.
    #[test]
    fn base_urls() {
        let url = parse_base_url("http://127.0.0.1:9090/").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9090/");
        let prefixed = parse_base_url("https://ops.example/portico/").unwrap();
        assert_eq!(prefixed.path(), "/portico");
        assert!(parse_base_url("ftp://x").is_err());
        assert!(parse_base_url("not a url").is_err());
    }
}
