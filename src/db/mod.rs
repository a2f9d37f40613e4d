//! PostgreSQL access: the connection target (URL and TLS), the pool, and one typed function
//! per statement of `sql/queries/`, each a method of [`Db`].
//!
//! - `pool`: [`PgTarget`] (where connections go), [`Db`] (the pool, the statement timeout,
//!   the query metrics) and [`DbError`];
//! - `tls`: libpq's `sslmode` and the rustls connector;
//! - `schema`: the schema version and site identity every start checks;
//! - `claim`: the relay's claim → start → mark path;
//! - `outcome`: a row's outcome, recorded by the workflow or failed by the reconciler;
//! - `operator`: the statements of `status`, `replay` and `cancel`;
//! - `upkeep`: the backlog gauges and retention.
//!
//! Each statement is a file of `sql/queries/`, embedded with `include_str!` by the module
//! that runs it.

mod claim;
mod operator;
mod outcome;
mod pool;
mod schema;
mod tls;
mod upkeep;

pub use claim::{Claim, ClaimLimits, Started};
pub use operator::{
    CancelCandidate, CancelSelection, Failure, ReplayCandidate, ReplaySelection, StateCount,
};
pub use outcome::DispatchedRow;
pub(crate) use pool::pg_detail;
pub use pool::{Db, DbError, PgTarget};
pub use upkeep::Backlog;

/// The outbox schema version this build reads and writes (sql/schema/).
pub const SCHEMA_VERSION: i32 = 7;

/// The channel the outbox's insert trigger notifies and the relay listens on.
pub const NOTIFY_CHANNEL: &str = "trigger_relay_outbox";
