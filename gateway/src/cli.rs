//! Command-line interface: `portico run | validate | token new`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::token;

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
