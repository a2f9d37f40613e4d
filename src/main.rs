//! The trigger-relay command line.

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};
use tracing_subscriber::EnvFilter;

use trigger_relay::cli;
use trigger_relay::config::{Cli, Command, LogConfig, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|err| exit_with_variable(err));
    init_logging(&cli.log);
    let is_daemon = matches!(cli.command, Command::Run(_));
    match cli::execute(cli.command).await {
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

/// clap names the flag of a bad value (`--poll-interval`); most deployments set
/// `TRIGGER_RELAY_*` variables instead, so the error names the variable too.
fn exit_with_variable(err: clap::Error) -> ! {
    let bad_value = matches!(
        err.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    );
    if let (true, Some(ContextValue::String(arg))) = (bad_value, err.get(ContextKind::InvalidArg))
        && let Some(variable) = env_variable_of(arg)
        && std::env::var_os(&variable).is_some()
    {
        eprint!("{}", err.render());
        eprintln!("note: the value comes from the environment variable {variable}");
        std::process::exit(2);
    }
    err.exit()
}

/// The environment variable of the flag clap displays as `arg` (`--poll-interval <..>`).
fn env_variable_of(arg: &str) -> Option<String> {
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    let root = Cli::command();
    let mut commands = vec![&root];
    commands.extend(root.get_subcommands());
    commands
        .into_iter()
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned())
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
