//! The `portico` command: parses the command line, sets up logging, loads the config and hands
//! bound listeners to [`gateway::run`]. Everything else lives in the library.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use gateway::cli::{Cli, Command, Operation, TokenCommand};
use gateway::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            gateway::logging::init(args.log_format);
            match serve(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err:#}");
                    eprintln!("portico: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate(args) => gateway::cli::validate(&args.config),
        Command::Token(TokenCommand::New { project, name }) => {
            gateway::cli::token_new(&project, &name)
        }
        Command::Endpoint(args) => {
            gateway::cli::operate(&args.admin, Operation::Endpoint(&args.command))
        }
        Command::Reload(admin) => gateway::cli::operate(&admin, Operation::Reload),
        Command::Config(admin) => gateway::cli::operate(&admin, Operation::Config),
    }
}

fn serve(args: &gateway::cli::RunArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config).map_err(|err| {
        for problem in err.problems() {
            eprintln!("{}: {problem}", args.config.display());
        }
        anyhow::anyhow!("{}: configuration is not valid", args.config.display())
    })?;
    let listeners = gateway::listen::bind(&config).context("binding listeners")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("portico")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        // Signals first: once the ports are printed, a supervisor may signal at once.
        let shutdown = gateway::signal::install().context("installing signal handlers")?;
        let hangups = gateway::signal::hangups().context("installing the SIGHUP handler")?;
        for (name, addr) in listeners.addresses() {
            // Tests and scripts read these lines to learn the bound ports.
            println!("listening on {name} {addr}");
        }
        let reload = gateway::server::ReloadOn {
            path: args.config.clone(),
            hangups,
        };
        gateway::run(listeners, config, Some(reload), shutdown).await?;
        Ok(())
    })
}
