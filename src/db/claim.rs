//! The relay's path for a row (`Relay::drain`, src/relay/mod.rs): claim a batch, look up
//! the triggers' names, then mark each row dispatched once its workflow started, fail a
//! poison row, or hand a claim back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::Type;

use super::pool::column;
use super::{Db, DbError};
use crate::outbox::{BadPayload, ClaimedRow, PoisonRow, UndecodableRow};

const CLAIM: &str = include_str!("../../sql/queries/claim.sql");
const TRIGGER_NAMES: &str = include_str!("../../sql/queries/trigger_names.sql");
const MARK_DISPATCHED: &str = include_str!("../../sql/queries/mark_dispatched.sql");
const MARK_FAILED: &str = include_str!("../../sql/queries/mark_failed.sql");
const RELEASE_CLAIM: &str = include_str!("../../sql/queries/release_claim.sql");
const RELEASE_ORPHANED_CLAIMS: &str = include_str!("../../sql/queries/release_orphaned_claims.sql");

impl Db {
    /// Claims up to `limits.rows` rows holding at most `limits.batch_bytes` bytes of context
    /// between them (or one row, if alone larger), and writes on each the id of the workflow
    /// it is about to start (`workflow_id_prefix`). Each comes back decoded, or as the
    /// poison row it is (the caller fails it alone), oldest first; a row whose context is
    /// over `limits.row_bytes` comes back as such without its context, which PostgreSQL
    /// measured and kept (sql/queries/claim.sql).
    pub async fn claim(
        &self,
        limits: ClaimLimits,
        replica: &str,
        lease: Duration,
        workflow_id_prefix: &str,
    ) -> Result<Claim, DbError> {
        const Q: &str = "claim";
        let lease = lease.as_secs_f64();
        let row_bytes = i32::try_from(limits.row_bytes).unwrap_or(i32::MAX);
        let batch_bytes = i64::try_from(limits.batch_bytes).unwrap_or(i64::MAX);
        let rows = self
            .rows(
                Q,
                CLAIM,
                &[
                    (&limits.rows, Type::INT8),
                    (&replica, Type::TEXT),
                    (&lease, Type::FLOAT8),
                    (&row_bytes, Type::INT4),
                    (&batch_bytes, Type::INT8),
                    (&workflow_id_prefix, Type::TEXT),
                ],
            )
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        let mut candidates = 0i64;
        for row in &rows {
            // The key columns are NOT NULL integers; without them no row can be named.
            let id: i64 = column(row, Q, "id")?;
            let generation: i32 = column(row, Q, "generation")?;
            candidates = column(row, Q, "candidates")?;
            let size: i32 = column(row, Q, "context_bytes")?;
            if size > row_bytes {
                claimed.push(Err(PoisonRow::Oversize {
                    id,
                    generation,
                    problem: BadPayload::ContextTooLarge {
                        size: i64::from(size),
                        limit: limits.row_bytes,
                    },
                }));
            } else {
                claimed.push(decode_claimed(row, id, generation).map_err(PoisonRow::Undecodable));
            }
        }
        // The rows' buffers go before the batch is handed on: the decoded rows hold their
        // own copies of the contexts.
        drop(rows);
        // UPDATE ... RETURNING does not keep the CTE's order; start oldest first.
        claimed.sort_by_key(|r| match r {
            Ok(row) => row.id,
            Err(bad) => bad.id(),
        });
        Ok(Claim {
            rows: claimed,
            locked: candidates,
        })
    }

    /// The names of these triggers (dj-triggers' table), for the workflows' memo and search
    /// attributes. A trigger deleted meanwhile is absent from the map.
    pub async fn trigger_names(
        &self,
        trigger_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, String>, DbError> {
        if trigger_ids.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let ids = trigger_ids.to_vec();
        let rows = self
            .rows("trigger_names", TRIGGER_NAMES, &[(&ids, Type::INT8_ARRAY)])
            .await?;
        let mut names = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = column(row, "trigger_names", "id")?;
            let name: Option<String> = column(row, "trigger_names", "name")?;
            if let Some(name) = name {
                names.insert(id, name);
            }
        }
        Ok(names)
    }

    /// Marks the started rows of one batch dispatched; returns (id, commit-to-start seconds)
    /// for the rows that were still pending.
    pub async fn mark_dispatched(&self, started: &[Started]) -> Result<Vec<(i64, f64)>, DbError> {
        if started.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = started.iter().map(|s| s.id).collect();
        let generations: Vec<i32> = started.iter().map(|s| s.generation).collect();
        let workflow_ids: Vec<&str> = started.iter().map(|s| s.workflow_id.as_str()).collect();
        let run_ids: Vec<Option<&str>> = started.iter().map(|s| s.run_id.as_deref()).collect();
        let started_at: Vec<DateTime<Utc>> = started.iter().map(|s| s.started_at).collect();
        let rows = self
            .rows(
                "mark_dispatched",
                MARK_DISPATCHED,
                &[
                    (&ids, Type::INT8_ARRAY),
                    (&generations, Type::INT4_ARRAY),
                    (&workflow_ids, Type::TEXT_ARRAY),
                    (&run_ids, Type::TEXT_ARRAY),
                    (&started_at, Type::TIMESTAMPTZ_ARRAY),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = column(r, "mark_dispatched", "id")?;
                let latency: Option<f64> = column(r, "mark_dispatched", "commit_to_start")?;
                Ok((id, latency.unwrap_or(0.0)))
            })
            .collect()
    }

    pub async fn mark_failed(
        &self,
        id: i64,
        generation: i32,
        error: &str,
    ) -> Result<bool, DbError> {
        let rows = self
            .rows(
                "mark_failed",
                MARK_FAILED,
                &[
                    (&id, Type::INT8),
                    (&generation, Type::INT4),
                    (&error, Type::TEXT),
                ],
            )
            .await?;
        Ok(rows.len() == 1)
    }

    pub async fn release_claim(
        &self,
        row: &ClaimedRow,
        replica: &str,
        error: &str,
    ) -> Result<(), DbError> {
        self.rows(
            "release_claim",
            RELEASE_CLAIM,
            &[
                (&row.id, Type::INT8),
                (&row.generation, Type::INT4),
                (&replica, Type::TEXT),
                (&error, Type::TEXT),
            ],
        )
        .await?;
        Ok(())
    }

    /// Hands back the claims `replica` holds with nothing in flight; returns how many.
    pub async fn release_orphaned_claims(&self, replica: &str) -> Result<usize, DbError> {
        let rows = self
            .rows(
                "release_orphaned_claims",
                RELEASE_ORPHANED_CLAIMS,
                &[(&replica, Type::TEXT)],
            )
            .await?;
        Ok(rows.len())
    }
}

/// Decodes a claimed row's columns; a value that cannot be decoded (an `infinity`
/// timestamp, a NULL where none belongs) makes the row undecodable, naming the column.
fn decode_claimed(row: &Row, id: i64, generation: i32) -> Result<ClaimedRow, UndecodableRow> {
    let bad = |column: &'static str, error: tokio_postgres::Error| UndecodableRow {
        id,
        generation,
        column,
        detail: match std::error::Error::source(&error) {
            Some(cause) => cause.to_string(),
            None => error.to_string(),
        },
    };
    Ok(ClaimedRow {
        id,
        generation,
        firing_uuid: row
            .try_get("firing_uuid")
            .map_err(|e| bad("firing_uuid", e))?,
        event_id: row.try_get("event_id").map_err(|e| bad("event_id", e))?,
        trigger_id: row
            .try_get("trigger_id")
            .map_err(|e| bad("trigger_id", e))?,
        user_pk: row.try_get("user_pk").map_err(|e| bad("user_pk", e))?,
        context: row.try_get("context").map_err(|e| bad("context", e))?,
        created_at: row
            .try_get("created_at")
            .map_err(|e| bad("created_at", e))?,
        due_at: row.try_get("due_at").map_err(|e| bad("due_at", e))?,
        attempts: row.try_get("attempts").map_err(|e| bad("attempts", e))?,
        workflow_id: row
            .try_get("workflow_id")
            .map_err(|e| bad("workflow_id", e))?,
    })
}

/// What one claim may take.
#[derive(Debug, Clone, Copy)]
pub struct ClaimLimits {
    /// TRIGGER_RELAY_BATCH_SIZE.
    pub rows: i64,
    /// TRIGGER_RELAY_MAX_INPUT_BYTES: a context larger than this is not returned.
    pub row_bytes: usize,
    /// TRIGGER_RELAY_CLAIM_MAX_BYTES: the contexts of one batch together.
    pub batch_bytes: u64,
}

/// One claim's rows, and how many it locked.
#[derive(Debug)]
pub struct Claim {
    pub rows: Vec<Result<ClaimedRow, PoisonRow>>,
    /// Rows the claim locked: its row limit when more may be waiting; more than it returned
    /// when it stopped at the byte budget, the others left pending.
    pub locked: i64,
}

impl Claim {
    /// The claim stopped at the byte budget before the rows it locked.
    pub fn cut(&self) -> bool {
        i64::try_from(self.rows.len()).is_ok_and(|returned| returned < self.locked)
    }
}

/// A row whose workflow start Temporal accepted (or had already accepted).
#[derive(Debug, Clone)]
pub struct Started {
    pub id: i64,
    pub generation: i32,
    pub workflow_id: String,
    pub run_id: Option<String>,
    pub started_at: DateTime<Utc>,
}
