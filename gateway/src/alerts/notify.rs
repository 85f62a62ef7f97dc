//! Notifications: what is said when an alert fires or resolves, and its delivery by webhook
//! (a JSON POST) and e-mail (SMTP).
//!
//! Evaluation only queues a notification ([`Notifier::send`] never waits). One task per
//! channel delivers them in order, retrying a failed delivery with back-off; a delivery
//! that still fails is logged and counted in `portico_alert_notifications_total{channel,
//! outcome="failed"}`, and a full queue counts `outcome="dropped"`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;
use tokio::sync::mpsc;

use crate::accesslog::Rfc3339;
use crate::config::{AlertChannel, AlertMetric, AlertOperator, Alerts, Smtp, SmtpTls};

/// Notifications waiting per channel; beyond this they are dropped (and counted).
const QUEUE: usize = 256;
/// Tries per notification and channel.
const ATTEMPTS: u32 = 4;
/// Wait before the second try; doubled before each further one.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// What a notification reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The condition held for `for_seconds`.
    Firing,
    /// The condition no longer holds.
    Resolved,
}

impl State {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

/// One alert firing or resolving on one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The rule's name.
    pub alert: String,
    /// The endpoint's id.
    pub endpoint: String,
    /// The metric compared.
    pub metric: AlertMetric,
    /// The comparison.
    pub operator: AlertOperator,
    /// The rule's threshold.
    pub threshold: f64,
    /// The value read at this evaluation; `None` when there was no data.
    pub value: Option<f64>,
    /// Firing or resolved.
    pub state: State,
    /// When the condition began to hold (the start of the episode).
    pub since: SystemTime,
    /// When this notification was made.
    pub time: SystemTime,
    /// Where it goes.
    pub channels: Vec<AlertChannel>,
}

impl Notification {
    /// One line for people, e.g.
    /// `[FIRING] high-errors on e1: error_rate is 0.8 (> 0.5) since 2026-…Z`.
    pub fn message(&self) -> String {
        let value = self.value.map_or_else(|| "no data".to_string(), number);
        let since = Rfc3339(self.since);
        match self.state {
            State::Firing => format!(
                "[FIRING] {} on {}: {} is {value} ({} {}) since {since}",
                self.alert,
                self.endpoint,
                self.metric.as_str(),
                self.operator.as_str(),
                number(self.threshold),
            ),
            State::Resolved => format!(
                "[RESOLVED] {} on {}: {} is {value}, no longer {} {} (held since {since})",
                self.alert,
                self.endpoint,
                self.metric.as_str(),
                self.operator.as_str(),
                number(self.threshold),
            ),
        }
    }

    /// The webhook body.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "alert": self.alert,
            "endpoint": self.endpoint,
            "metric": self.metric.as_str(),
            "operator": self.operator.as_str(),
            "threshold": self.threshold,
            "value": self.value,
            "state": self.state.as_str(),
            "since": Rfc3339(self.since).to_string(),
            "time": Rfc3339(self.time).to_string(),
            "message": self.message(),
        })
    }

    /// The e-mail subject: the message's head.
    pub fn subject(&self) -> String {
        let state = match self.state {
            State::Firing => "FIRING",
            State::Resolved => "RESOLVED",
        };
        format!("[Portico {state}] {} on {}", self.alert, self.endpoint)
    }

    /// The e-mail body: the message, then every field on its own line.
    pub fn body(&self) -> String {
        let mut body = self.message();
        body.push_str("\n\n");
        let value = self.value.map_or_else(|| "no data".to_string(), number);
        for (key, value) in [
            ("alert", self.alert.clone()),
            ("endpoint", self.endpoint.clone()),
            ("metric", self.metric.as_str().to_string()),
            (
                "condition",
                format!("{} {}", self.operator.as_str(), number(self.threshold)),
            ),
            ("value", value),
            ("state", self.state.as_str().to_string()),
            ("since", Rfc3339(self.since).to_string()),
            ("time", Rfc3339(self.time).to_string()),
        ] {
            // Writing to a String cannot fail.
            let _ = writeln!(body, "{key}: {value}");
        }
        body
    }
}

/// A number for people: at most four decimals, no trailing zeros (`0.8`, `1200`, `0.3333`).
pub fn number(value: f64) -> String {
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// Where notifications go now; replaced whole by a reload.
#[derive(Debug, Clone)]
struct Channels {
    webhook: Option<(String, Duration)>,
    email: Option<(Smtp, Vec<lettre::message::Mailbox>)>,
}

impl Channels {
    fn of(alerts: &Alerts) -> Channels {
        Channels {
            webhook: alerts
                .webhook_url
                .as_ref()
                .map(|url| (url.to_string(), alerts.webhook_timeout)),
            email: alerts
                .smtp
                .clone()
                .filter(|_| !alerts.email_to.is_empty())
                .map(|smtp| (smtp, alerts.email_to.clone())),
        }
    }
}

/// The queues of the delivery tasks.
#[derive(Debug)]
pub struct Notifier {
    channels: Arc<ArcSwap<Channels>>,
    webhook: mpsc::Sender<Notification>,
    email: mpsc::Sender<Notification>,
}

impl Notifier {
    /// Starts one delivery task per channel on the current runtime.
    pub fn start(alerts: &Alerts) -> Notifier {
        let channels = Arc::new(ArcSwap::from_pointee(Channels::of(alerts)));
        let (webhook, webhook_rx) = mpsc::channel(QUEUE);
        let (email, email_rx) = mpsc::channel(QUEUE);
        tokio::spawn(deliver_webhooks(webhook_rx, Arc::clone(&channels)));
        tokio::spawn(deliver_emails(email_rx, Arc::clone(&channels)));
        Notifier {
            channels,
            webhook,
            email,
        }
    }

    /// Uses the channels of `alerts` from the next delivery on.
    pub fn replace(&self, alerts: &Alerts) {
        self.channels.store(Arc::new(Channels::of(alerts)));
    }

    /// Queues `notification` on each of its channels, without waiting.
    pub fn send(&self, notification: &Notification) {
        for channel in &notification.channels {
            let queue = match channel {
                AlertChannel::Webhook => &self.webhook,
                AlertChannel::Email => &self.email,
            };
            if queue.try_send(notification.clone()).is_err() {
                tracing::warn!(
                    alert = %notification.alert,
                    endpoint = %notification.endpoint,
                    channel = channel.as_str(),
                    "alert notification dropped: the delivery queue is full"
                );
                count(*channel, "dropped");
            }
        }
    }
}

fn count(channel: AlertChannel, outcome: &'static str) {
    metrics::counter!(
        "portico_alert_notifications_total",
        "channel" => channel.as_str(),
        "outcome" => outcome,
    )
    .increment(1);
}

/// Why one delivery attempt failed, and whether another may succeed.
struct Failure {
    reason: String,
    retry: bool,
}

/// Delivers `notification` with up to [`ATTEMPTS`] tries, then counts the outcome.
async fn with_retries<F, Fut>(channel: AlertChannel, notification: &Notification, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let mut backoff = FIRST_BACKOFF;
    for tries in 1..=ATTEMPTS {
        match attempt().await {
            Ok(()) => {
                tracing::info!(
                    alert = %notification.alert,
                    endpoint = %notification.endpoint,
                    state = notification.state.as_str(),
                    channel = channel.as_str(),
                    "alert notification sent"
                );
                count(channel, "sent");
                return;
            }
            Err(failure) if failure.retry && tries < ATTEMPTS => {
                tracing::warn!(
                    alert = %notification.alert,
                    channel = channel.as_str(),
                    error = %failure.reason,
                    retry_in = ?backoff,
                    "alert notification failed; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(failure) => {
                tracing::error!(
                    alert = %notification.alert,
                    endpoint = %notification.endpoint,
                    state = notification.state.as_str(),
                    channel = channel.as_str(),
                    error = %failure.reason,
                    tries,
                    "alert notification not delivered"
                );
                count(channel, "failed");
                return;
            }
        }
    }
}

async fn deliver_webhooks(
    mut queue: mpsc::Receiver<Notification>,
    channels: Arc<ArcSwap<Channels>>,
) {
    // A webhook gets exactly the URL configured: a redirect could send alert details
    // somewhere else.
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "alert webhooks disabled: no HTTP client");
            while let Some(notification) = queue.recv().await {
                tracing::error!(alert = %notification.alert, "alert webhook not sent: no HTTP client");
                count(AlertChannel::Webhook, "failed");
            }
            return;
        }
    };
    while let Some(notification) = queue.recv().await {
        let body = notification.to_json();
        with_retries(AlertChannel::Webhook, &notification, || {
            let channels = channels.load_full();
            let client = client.clone();
            let body = body.clone();
            async move {
                let Some((url, timeout)) = channels.webhook.clone() else {
                    return Err(Failure {
                        reason: "no [alerts].webhook_url any more".into(),
                        retry: false,
                    });
                };
                post(&client, &url, timeout, &body).await
            }
        })
        .await;
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    body: &serde_json::Value,
) -> Result<(), Failure> {
    let response = client
        .post(url)
        .timeout(timeout)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|err| Failure {
            reason: err.to_string(),
            retry: true,
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    Err(Failure {
        reason: format!("the webhook answered {status}"),
        // The receiver may recover from these; any other answer will not change.
        retry: status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408,
    })
}

async fn deliver_emails(mut queue: mpsc::Receiver<Notification>, channels: Arc<ArcSwap<Channels>>) {
    while let Some(notification) = queue.recv().await {
        with_retries(AlertChannel::Email, &notification, || {
            let channels = channels.load_full();
            let notification = notification.clone();
            async move {
                let Some((smtp, to)) = &channels.email else {
                    return Err(Failure {
                        reason: "no [smtp] or [alerts].email_to any more".into(),
                        retry: false,
                    });
                };
                send_email(smtp, to, &notification).await
            }
        })
        .await;
    }
}

/// The e-mail for `notification`, from `smtp.from` to every recipient.
pub fn email(
    smtp: &Smtp,
    to: &[lettre::message::Mailbox],
    notification: &Notification,
) -> Result<Message, lettre::error::Error> {
    let mut builder = Message::builder()
        .from(smtp.from.clone())
        .subject(notification.subject())
        .header(ContentType::TEXT_PLAIN);
    for mailbox in to {
        builder = builder.to(mailbox.clone());
    }
    builder.body(notification.body())
}

async fn send_email(
    smtp: &Smtp,
    to: &[lettre::message::Mailbox],
    notification: &Notification,
) -> Result<(), Failure> {
    let message = email(smtp, to, notification).map_err(|err| Failure {
        reason: format!("cannot build the e-mail: {err}"),
        retry: false,
    })?;
    let transport = transport(smtp).map_err(|err| Failure {
        reason: format!("TLS set-up for {}: {err}", smtp.host),
        retry: false,
    })?;
    match transport.send(message).await {
        Ok(_) => Ok(()),
        Err(err) => Err(Failure {
            // A permanent SMTP answer (5xx: recipient refused, authentication failed) will
            // not change on a retry.
            retry: !err.is_permanent(),
            reason: err.to_string(),
        }),
    }
}

fn transport(
    smtp: &Smtp,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, lettre::transport::smtp::Error> {
    let tls = match smtp.tls {
        SmtpTls::Off => Tls::None,
        SmtpTls::Required => Tls::Required(TlsParameters::new(smtp.host.clone())?),
        SmtpTls::Opportunistic => Tls::Opportunistic(TlsParameters::new(smtp.host.clone())?),
        SmtpTls::Implicit => Tls::Wrapper(TlsParameters::new(smtp.host.clone())?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(smtp.timeout));
    if let Some((user, password)) = &smtp.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(builder.build())
}
