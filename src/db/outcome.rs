//! How a dispatched row finishes: the workflow records its outcome (`record_outcome`, the
//! daemon's activity in src/workflow.rs), or the reconciler (src/relay/reconcile.rs) fails
//! a row whose workflow closed without recording.

use std::time::Duration;

use tokio_postgres::types::Type;

use super::pool::column;
use super::{Db, DbError};
use crate::outbox::Outcome;

const RECORD_OUTCOME: &str = include_str!("../../sql/queries/record_outcome.sql");
const RECONCILE_CLAIM: &str = include_str!("../../sql/queries/reconcile_claim.sql");
const RECONCILE_FAIL: &str = include_str!("../../sql/queries/reconcile_fail.sql");
const DISPATCHED_OVERDUE: &str = include_str!("../../sql/queries/dispatched_overdue.sql");

impl Db {
    /// Records a workflow's outcome; false if the row had moved on (replayed, cancelled,
    /// recorded by an earlier attempt) or belongs to another firing.
    pub async fn record_outcome(
        &self,
        outcome: &Outcome,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<bool, DbError> {
        let state = outcome.state.as_str();
        let rows = self
            .rows(
                "record_outcome",
                RECORD_OUTCOME,
                &[
                    (&outcome.outbox_id, Type::INT8),
                    (&outcome.generation, Type::INT4),
                    (&state, Type::TEXT),
                    (&outcome.reason, Type::TEXT),
                    (&outcome.error, Type::TEXT),
                    (&outcome.firing_uuid, Type::TEXT),
                    (&workflow_id, Type::TEXT),
                    (&run_id, Type::TEXT),
                ],
            )
            .await?;
        Ok(rows.len() == 1)
    }
}

/// A dispatched row the reconciler looks at.
#[derive(Debug, Clone)]
pub struct DispatchedRow {
    pub id: i64,
    pub generation: i32,
    pub workflow_id: Option<String>,
    pub firing_uuid: Option<String>,
}

impl Db {
    /// Claims up to `limit` rows dispatched longer than `after` ago and not looked at for as
    /// long; they are not handed out again for `after`.
    pub async fn reconcile_claim(
        &self,
        limit: i64,
        after: Duration,
        replica: &str,
    ) -> Result<Vec<DispatchedRow>, DbError> {
        const Q: &str = "reconcile_claim";
        let after = after.as_secs_f64();
        self.rows(
            Q,
            RECONCILE_CLAIM,
            &[
                (&limit, Type::INT8),
                (&after, Type::FLOAT8),
                (&replica, Type::TEXT),
            ],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(DispatchedRow {
                id: column(r, Q, "id")?,
                generation: column(r, Q, "generation")?,
                workflow_id: column(r, Q, "workflow_id")?,
                firing_uuid: column(r, Q, "firing_uuid")?,
            })
        })
        .collect()
    }

    /// dispatched -> failed for a row whose workflow closed without recording.
    pub async fn reconcile_fail(
        &self,
        row: &DispatchedRow,
        workflow_id: &str,
        error: &str,
    ) -> Result<bool, DbError> {
        let rows = self
            .rows(
                "reconcile_fail",
                RECONCILE_FAIL,
                &[
                    (&row.id, Type::INT8),
                    (&row.generation, Type::INT4),
                    (&workflow_id, Type::TEXT),
                    (&error, Type::TEXT),
                ],
            )
            .await?;
        Ok(rows.len() == 1)
    }

    /// Dispatched rows, and those due more than `margin` ago.
    pub async fn dispatched_overdue(&self, margin: Duration) -> Result<(i64, i64), DbError> {
        let margin = margin.as_secs_f64();
        let rows = self
            .rows(
                "dispatched_overdue",
                DISPATCHED_OVERDUE,
                &[(&margin, Type::FLOAT8)],
            )
            .await?;
        match rows.first() {
            Some(r) => Ok((
                column(r, "dispatched_overdue", "dispatched")?,
                column(r, "dispatched_overdue", "overdue")?,
            )),
            None => Ok((0, 0)),
        }
    }
}
