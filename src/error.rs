//! Errors that end a command, each with the context an operator needs to act on it.

use crate::db::DbError;
use crate::histories::HistoryError;
use crate::temporal::TemporalError;
use crate::worker::WorkerError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Temporal(#[from] TemporalError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install the signal handler: {0}")]
    Signal(std::io::Error),
    #[error("{0}")]
    Incomplete(String),
    #[error("the {task} task {how}; exiting so the supervisor restarts the process")]
    TaskDied { task: &'static str, how: String },
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}
