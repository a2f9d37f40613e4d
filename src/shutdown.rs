//! One cancellation token for the whole process, cancelled by SIGTERM or SIGINT. A second
//! signal ends the process at once: an operator who asks twice does not want to wait for
//! the shutdown timeouts.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// Exit status of a shutdown cut short by a second signal (128 + SIGINT, as shells report).
const FORCED_EXIT: i32 = 130;

pub fn on_signals() -> Result<CancellationToken, Error> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutting down (a second signal forces the exit)"
        );
        cancel.cancel();
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = name, "second signal: exiting now");
        std::process::exit(FORCED_EXIT);
    });
    Ok(token)
}
