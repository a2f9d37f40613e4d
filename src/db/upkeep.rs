//! The background tasks' statements: the backlog gauges (src/relay/stats.rs) and retention
//! (src/relay/retention.rs).

use std::time::Duration;

use tokio_postgres::types::Type;

use super::pool::column;
use super::{Db, DbError};

const BACKLOG: &str = include_str!("../../sql/queries/backlog.sql");
const DELETE_FINISHED: &str = include_str!("../../sql/queries/delete_finished.sql");

impl Db {
    pub async fn backlog(&self) -> Result<Backlog, DbError> {
        let rows = self.rows("backlog", BACKLOG, &[]).await?;
        let r = rows.first().ok_or(DbError::Decode {
            query: "backlog",
            column: "pending",
            detail: "no row returned".into(),
        })?;
        Ok(Backlog {
            pending: column(r, "backlog", "pending")?,
            oldest_pending_age: column(r, "backlog", "oldest_pending_age")?,
            failed: column(r, "backlog", "failed")?,
        })
    }

    /// Deletes up to `batch` rows finished longer than `keep_for` ago; returns how many.
    pub async fn delete_finished(&self, keep_for: Duration, batch: i64) -> Result<u64, DbError> {
        let keep_for = keep_for.as_secs_f64();
        let rows = self
            .rows(
                "delete_finished",
                DELETE_FINISHED,
                &[(&keep_for, Type::FLOAT8), (&batch, Type::INT8)],
            )
            .await?;
        let deleted: i64 = match rows.first() {
            Some(r) => column(r, "delete_finished", "count")?,
            None => 0,
        };
        Ok(u64::try_from(deleted).unwrap_or(0))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Backlog {
    pub pending: i64,
    pub oldest_pending_age: Option<f64>,
    pub failed: i64,
}
