//! The command line's subcommands (`Command` in src/config.rs), one module each, and the
//! output they share.
//!
//! `run` is the daemon (src/run.rs); the others are operator commands that print a table,
//! `--json` or one line per history, every value escaped by [`output`] (README, "The
//! command line").

mod cancel;
mod output;
mod replay;
mod replay_histories;
mod status;

pub(crate) use output::escape;

use crate::config::Command;
use crate::error::Error;

/// Runs one subcommand to its end.
pub async fn execute(command: Command) -> Result<(), Error> {
    match command {
        Command::Run(config) => crate::run::run(*config).await,
        Command::Status(config) => status::status(config).await,
        Command::Replay(config) => replay::replay(config).await,
        Command::Cancel(config) => cancel::cancel(config).await,
        Command::ReplayHistories(config) => replay_histories::replay_histories(config).await,
    }
}
