//! The trigger-relay command line.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use trigger_relay::config::{Cli, Command, LogConfig, LogFormat};
use trigger_relay::{cancel, cli_output, histories, run};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let is_daemon = matches!(cli.command, Command::Run(_));
    let result = match cli.command {
        Command::Run(config) => run::run(*config).await,
        Command::Status(config) => cli_output::status(config).await,
        Command::Replay(config) => cli_output::replay(config).await,
        Command::Cancel(config) => cancel::cancel(config).await,
        Command::ReplayHistories(config) => histories::replay_histories(config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The daemon's logs are collected as structured lines; a CLI user reads stderr.
            if is_daemon {
                tracing::error!(error = %err, "trigger-relay failed");
            }
            eprintln!("trigger-relay: {err}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(log: &LogConfig) {
    let filter = EnvFilter::try_new(&log.log_filter).unwrap_or_else(|err| {
        eprintln!(
            "trigger-relay: ignoring TRIGGER_RELAY_LOG={:?}: {err}",
            log.log_filter
        );
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
