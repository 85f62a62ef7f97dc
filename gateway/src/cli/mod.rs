//! Command-line interface: `portico run | validate | token new`, and the operator commands
//! that talk to a running daemon's admin API: `portico endpoint …`, `reload`, `config`.
//!
//! Layout:
//! - `admin`: the admin API client, its options (`--admin`, `--token`, `--json`) and
//!   [`CliError`], the one mapping from a failed call to a message and exit code.
//! - `endpoint`: the `endpoint` subcommands.
//! - `logs`: `endpoint logs`, plain and followed.
//! - `daemon`: `reload` and `config`.
//! - `view`, `usage`, `table`: how answers read for people.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::config::Config;
use crate::token;

/// `print!` that stays quiet when stdout is closed (`portico endpoint list | head -1`): the
/// reader has seen enough, and a panic would be noise.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `println!` that stays quiet when stdout is closed, like `out!`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod admin;
mod daemon;
mod endpoint;
mod logs;
mod table;
mod usage;
mod view;

pub use admin::{AdminClient, AdminOptions, CliError};
pub use endpoint::{EndpointArgs, EndpointCommand, ScalingArgs};
pub use logs::LogsArgs;

/// Portico: the front door of an inference cluster.
#[derive(Debug, Parser)]
#[command(name = "portico", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the configured listeners and endpoints.
    Run(RunArgs),
    /// Check a configuration file and list every problem in it.
    Validate(ConfigArg),
    /// Manage project API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Inspect and steer the endpoints of a running Portico (admin API).
    Endpoint(EndpointArgs),
    /// Make a running Portico re-read its configuration file.
    Reload(AdminOptions),
    /// Print the configuration a running Portico uses (secrets redacted).
    Config(AdminOptions),
}

/// Arguments of `portico run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(long, short, default_value = "config.toml", env = "PORTICO_CONFIG")]
    pub config: PathBuf,
    /// How log lines are written to stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "PORTICO_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// The `--config` argument alone.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The configuration file.
    #[arg(long, short, default_value = "config.toml", env = "PORTICO_CONFIG")]
    pub config: PathBuf,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `portico token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh random project token and the config line that accepts it.
    New {
        /// The project the token is for.
        #[arg(long)]
        project: String,
        /// The token's name: the caller identity in access logs and metrics.
        #[arg(long)]
        name: String,
    },
}

/// `portico validate`: exit 0 with a one-line summary, or exit 1 listing every problem.
pub fn validate(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("{}: warning: {warning}", path.display());
            }
            println!("{}: ok ({})", path.display(), config.summary());
            ExitCode::SUCCESS
        }
        Err(err) => {
            let problems = err.problems();
            for problem in &problems {
                eprintln!("{}: {problem}", path.display());
            }
            let noun = if problems.len() == 1 {
                "problem"
            } else {
                "problems"
            };
            eprintln!("{}: {} {noun}", path.display(), problems.len());
            ExitCode::FAILURE
        }
    }
}

/// `portico token new`: the token is printed once and only its hash belongs in the config.
pub fn token_new(project: &str, name: &str) -> ExitCode {
    let token = token::generate();
    let hash = token::sha256_hex(&token);
    println!("token: {token}");
    println!("(shown once: Portico stores only its SHA-256; keep the token somewhere safe)");
    println!();
    println!("add to the tokens of [[project]] id = {project:?}:");
    println!("  {{ name = {name:?}, sha256 = \"{hash}\" }}");
    ExitCode::SUCCESS
}

/// An operator command: what to ask the admin API.
#[derive(Debug)]
pub enum Operation<'a> {
    /// `portico endpoint …`.
    Endpoint(&'a EndpointCommand),
    /// `portico reload`.
    Reload,
    /// `portico config`.
    Config,
}

/// Runs an operator command against the admin API on a current-thread runtime; failures are
/// reported on stderr as one line each (exit 1, or 2 for usage errors).
pub fn operate(options: &AdminOptions, operation: Operation<'_>) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::Setup(format!("starting the runtime: {err}")))
        .and_then(|runtime| {
            runtime.block_on(async {
                let client = AdminClient::new(options)?;
                match operation {
                    Operation::Endpoint(command) => {
                        endpoint::execute(&client, command, options.json).await
                    }
                    Operation::Reload => daemon::reload(&client, options.json).await,
                    Operation::Config => daemon::config(&client, options.json).await,
                }
            })
        });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            err.report();
            ExitCode::from(err.exit_code())
        }
    }
}

/// Prints an API answer as pretty JSON.
fn print_json(answer: &Value) {
    // Serializing a `Value` cannot fail: its map keys are strings.
    outln!(
        "{}",
        serde_json::to_string_pretty(answer).unwrap_or_else(|_| answer.to_string())
    );
}

/// `text` as one URL path segment: everything but unreserved characters percent-encoded.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids go into paths safely.
    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("is-8458_a.b~"), "is-8458_a.b~");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    /// The admin options work before and after the endpoint subcommand.
    #[test]
    fn admin_options_anywhere() {
        for args in [
            &[
                "portico",
                "endpoint",
                "--admin",
                "http://h:1",
                "list",
                "--json",
            ][..],
            &[
                "portico",
                "endpoint",
                "list",
                "--json",
                "--admin",
                "http://h:1",
            ][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Endpoint(endpoint) = cli.command else {
                panic!("not an endpoint command")
            };
            assert_eq!(endpoint.admin.url.as_str(), "http://h:1/");
            assert!(endpoint.admin.json);
        }
    }
}
