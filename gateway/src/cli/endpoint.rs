//! `portico endpoint …`: read an endpoint's state and give it orders through the admin API.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::admin::{AdminClient, AdminOptions, CliError};
use super::logs::{LogsArgs, logs};
use super::{print_json, segment, usage, view};

/// `portico endpoint [--admin URL] [--token T] [--json] …`.
#[derive(Debug, Args)]
pub struct EndpointArgs {
    /// Where the admin API is and how to talk to it.
    #[command(flatten)]
    pub admin: AdminOptions,
    /// What to do.
    #[command(subcommand)]
    pub command: EndpointCommand,
}

/// The endpoint subcommands.
#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// List every endpoint with its workers and last minute of traffic.
    List,
    /// Show one endpoint: state, replicas, scaling settings.
    Get {
        /// The endpoint.
        id: String,
    },
    /// Pin the endpoint at a worker count (manual mode) until `autoscale`.
    Scale {
        /// The endpoint.
        id: String,
        /// How many workers to run (between min_workers and max_workers).
        #[arg(long, value_name = "N")]
        workers: u32,
    },
    /// Hand the worker count back to the autoscaler.
    Autoscale {
        /// The endpoint.
        id: String,
    },
    /// Change scaling settings at run time; only the options given change.
    UpdateScaling(ScalingArgs),
    /// Stop every worker; requests are refused until `start`.
    Stop {
        /// The endpoint.
        id: String,
    },
    /// Start a stopped endpoint again (autoscaled).
    Start {
        /// The endpoint.
        id: String,
    },
    /// Replace the workers one by one, keeping capacity while it runs.
    Restart {
        /// The endpoint.
        id: String,
    },
    /// Recent lifecycle events: scaling decisions, replicas starting, failing, stopping.
    Events {
        /// The endpoint.
        id: String,
        /// Only events after this sequence number.
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
        /// At most this many (the newest).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// The output of the endpoint's worker processes.
    Logs(LogsArgs),
    /// Requests, errors, latency, bytes and tokens per hour and per caller.
    Usage {
        /// The endpoint.
        id: String,
        /// How many hours back.
        #[arg(long, value_name = "N", default_value_t = 24)]
        hours: u32,
    },
}

/// `portico endpoint update-scaling ID [--min N] …`: at least one setting is required.
#[derive(Debug, Args)]
pub struct ScalingArgs {
    /// The endpoint.
    pub id: String,
    /// `min_workers`: the fewest workers (0 allows scaling to zero).
    #[arg(long, value_name = "N")]
    pub min: Option<u32>,
    /// `max_workers`: the most workers.
    #[arg(long, value_name = "N")]
    pub max: Option<u32>,
    /// `metric`: what the target is compared with (`concurrency`, `rps` or `custom`).
    #[arg(long, value_name = "M")]
    pub metric: Option<String>,
    /// `custom_metric`: the worker metric to scale on, with `--metric custom`.
    #[arg(long, value_name = "NAME")]
    pub custom_metric: Option<String>,
    /// `target`: the metric's value per worker to aim for.
    #[arg(long, value_name = "X")]
    pub target: Option<f64>,
    /// `idle_timeout_seconds`: idle time before scaling to zero.
    #[arg(long, value_name = "S")]
    pub idle_timeout: Option<u64>,
    /// `initial_cooldown_seconds`: how long after a start no scale-down happens.
    #[arg(long, value_name = "S")]
    pub cooldown: Option<u64>,
}

impl ScalingArgs {
    /// The PATCH body: exactly the settings given; none is a usage error.
    pub fn body(&self) -> Result<Value, CliError> {
        let mut body = Map::new();
        let mut set = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                body.insert(key.to_owned(), value);
            }
        };
        set("min_workers", self.min.map(Value::from));
        set("max_workers", self.max.map(Value::from));
        set("metric", self.metric.clone().map(Value::from));
        set("custom_metric", self.custom_metric.clone().map(Value::from));
        set("target", self.target.map(Value::from));
        set("idle_timeout_seconds", self.idle_timeout.map(Value::from));
        set("initial_cooldown_seconds", self.cooldown.map(Value::from));
        if body.is_empty() {
            return Err(CliError::Usage(
                "update-scaling needs at least one of --min, --max, --metric, --custom-metric, \
                 --target, --idle-timeout, --cooldown"
                    .into(),
            ));
        }
        Ok(Value::Object(body))
    }
}

/// Runs one endpoint subcommand.
pub async fn execute(
    client: &AdminClient,
    command: &EndpointCommand,
    json: bool,
) -> Result<(), CliError> {
    let path = |id: &str, rest: &str| format!("/admin/endpoints/{}{rest}", segment(id));
    let status = |answer: &Value| outln!("{}", view::status_line(answer));
    match command {
        EndpointCommand::List => {
            let answer = client.get("/admin/endpoints", &[]).await?;
            show(&answer, json, |answer| {
                let endpoints = answer["endpoints"].as_array().cloned().unwrap_or_default();
                out!("{}", view::endpoint_table(&endpoints));
            });
        }
        EndpointCommand::Get { id } => {
            let answer = client.get(&path(id, ""), &[]).await?;
            show(&answer, json, |answer| {
                out!("{}", view::endpoint_detail(answer))
            });
        }
        EndpointCommand::Scale { id, workers } => {
            let body = json!({ "workers": workers });
            let answer = client.post(&path(id, "/scale"), Some(&body)).await?;
            show(&answer, json, status);
        }
        EndpointCommand::Autoscale { id } => {
            let answer = client.post(&path(id, "/autoscale"), None).await?;
            show(&answer, json, status);
        }
        EndpointCommand::Stop { id } => {
            let answer = client.post(&path(id, "/stop"), None).await?;
            show(&answer, json, status);
        }
        EndpointCommand::Start { id } => {
            let answer = client.post(&path(id, "/start"), None).await?;
            show(&answer, json, status);
        }
        EndpointCommand::Restart { id } => {
            let answer = client.post(&path(id, "/restart"), None).await?;
            show(&answer, json, |answer| {
                outln!("rolling restart of {id} started");
                status(answer);
            });
        }
        EndpointCommand::UpdateScaling(args) => {
            let answer = client
                .patch(&path(&args.id, "/scaling"), &args.body()?)
                .await?;
            show(&answer, json, |answer| {
                outln!("{}: scaling settings updated\n", args.id);
                out!("{}", view::endpoint_detail(answer));
            });
        }
        EndpointCommand::Events { id, since, limit } => {
            let mut query = Vec::new();
            if let Some(since) = since {
                query.push(("since", since.to_string()));
            }
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            let answer = client.get(&path(id, "/events"), &query).await?;
            show(&answer, json, |answer| {
                let events = answer["events"].as_array().cloned().unwrap_or_default();
                if events.is_empty() {
                    outln!("no events");
                } else {
                    out!("{}", view::events_table(&events));
                }
            });
        }
        EndpointCommand::Logs(args) => logs(client, args, json).await?,
        EndpointCommand::Usage { id, hours } => {
            let query = [("hours", hours.to_string())];
            let answer = client.get(&path(id, "/access/hourly"), &query).await?;
            show(&answer, json, |answer| {
                out!("{}", usage::hours_table(answer));
                let callers = usage::callers_table(answer);
                if !callers.is_empty() {
                    outln!();
                    out!("{callers}");
                }
            });
        }
    }
    Ok(())
}

/// Prints `answer` as pretty JSON with `--json`, else the way `human` shows it.
fn show(answer: &Value, json: bool, human: impl FnOnce(&Value)) {
    if json {
        print_json(answer);
    } else {
        human(answer);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn scaling(args: &[&str]) -> Result<Value, CliError> {
        let cli = Cli::try_parse_from(
            ["portico", "endpoint", "update-scaling", "e1"]
                .iter()
                .chain(args),
        )
        .unwrap();
        match cli.command {
            Command::Endpoint(EndpointArgs {
                command: EndpointCommand::UpdateScaling(args),
                ..
            }) => args.body(),
            other => panic!("{other:?}"),
        }
    }

    /// Only the settings given go into the PATCH body, under their API names.
    #[test]
    fn patch_body_holds_only_given_settings() {
        assert_eq!(scaling(&["--max", "4"]).unwrap(), json!({"max_workers": 4}));
        assert_eq!(
            scaling(&[
                "--min",
                "1",
                "--metric",
                "custom",
                "--custom-metric",
                "queue",
                "--target",
                "2.5",
                "--idle-timeout",
                "30",
                "--cooldown",
                "10"
            ])
            .unwrap(),
            json!({"min_workers": 1, "metric": "custom", "custom_metric": "queue",
                   "target": 2.5, "idle_timeout_seconds": 30, "initial_cooldown_seconds": 10})
        );
    }

    /// No setting at all is a usage error.
    #[test]
    fn patch_needs_a_setting() {
        let err = scaling(&[]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
