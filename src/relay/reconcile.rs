//! The reconciler: no row stays `dispatched` forever. A workflow terminated or reset by an
//! operator, timed out, or gone from the namespace never runs `record_outcome`; its row
//! would wait for nothing. Each pass claims rows dispatched longer than
//! `TRIGGER_RELAY_RECONCILE_AFTER` (safely across replicas), describes their workflows and
//! - leaves running ones alone (looked at again after the same period);
//! - records the result of one that completed but whose outcome never reached the row (the
//!   database was restored from before it finished);
//! - fails the row, naming what happened, for one that closed otherwise or does not exist;
//!   `trigger-relay replay` then performs what did not complete, once.

use std::time::Duration;

use temporalio_client::{
    Client, WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowGetResultOptions,
};
use tokio_util::sync::CancellationToken;

use crate::db::{Db, DbError, DispatchedRow};
use crate::metrics::Metrics;
use crate::outbox::{SkipReason, State};
use crate::workflow::TriggerWorkflow;

/// Rows described per claim; a pass claims until fewer come back.
const BATCH: i64 = 100;

pub struct Reconciler {
    pub db: Db,
    pub client: Client,
    pub metrics: Metrics,
    pub replica: String,
    pub interval: Duration,
    pub after: Duration,
}

/// What the reconciler found for one row.
enum Finding {
    Running,
    /// Closed without recording; the reason for `last_error`.
    Closed(String),
    /// Completed: its outcome, to record.
    Completed(crate::outbox::Outcome),
    /// Temporal could not answer now; look again next period.
    Unknown(String),
}

impl Reconciler {
    pub async fn run(self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(err) = self.pass(&cancel).await {
                tracing::warn!(error = %err, "reconcile pass interrupted");
            }
        }
    }

    async fn pass(&self, cancel: &CancellationToken) -> Result<(), DbError> {
        let (dispatched, overdue) = self.db.dispatched_overdue(self.after).await?;
        self.metrics
            .rows
            .with_label_values(&[State::Dispatched.as_str()])
            .set(dispatched);
        self.metrics.dispatched_overdue.set(overdue);
        loop {
            let rows = self
                .db
                .reconcile_claim(BATCH, self.after, &self.replica)
                .await?;
            for row in &rows {
                if cancel.is_cancelled() {
                    return Ok(());
                }
                self.settle(row).await?;
            }
            if rows.len() < BATCH as usize {
                return Ok(());
            }
        }
    }

    async fn settle(&self, row: &DispatchedRow) -> Result<(), DbError> {
        let Some(workflow_id) = row.workflow_id.as_deref() else {
            // A dispatched row always has its workflow id (mark_dispatched, record_outcome).
            return Ok(());
        };
        match self.describe(workflow_id).await {
            Finding::Running => Ok(()),
            Finding::Unknown(error) => {
                tracing::debug!(outbox_id = row.id, workflow_id, error, "cannot describe");
                Ok(())
            }
            Finding::Completed(outcome)
                if outcome.outbox_id == row.id
                    && outcome.generation == row.generation
                    && outcome.firing_uuid == row.firing_uuid =>
            {
                if self.db.record_outcome(&outcome, workflow_id, "").await? {
                    self.metrics
                        .reconciled
                        .with_label_values(&["recorded"])
                        .inc();
                    tracing::warn!(outbox_id = row.id, workflow_id, state = %outcome.state,
                                   "recorded the outcome of a workflow that finished without \
                                    its row knowing (restored database?)");
                }
                Ok(())
            }
            Finding::Completed(_) => {
                self.fail(
                    row,
                    workflow_id,
                    &format!(
                        "{}: the workflow with this id completed for another firing",
                        SkipReason::WorkflowMismatch
                    ),
                )
                .await
            }
            Finding::Closed(reason) => self.fail(row, workflow_id, &reason).await,
        }
    }

    async fn fail(
        &self,
        row: &DispatchedRow,
        workflow_id: &str,
        reason: &str,
    ) -> Result<(), DbError> {
        let error = format!("{reason} (workflow {workflow_id}); replay the row to perform it");
        if self.db.reconcile_fail(row, workflow_id, &error).await? {
            self.metrics.reconciled.with_label_values(&["failed"]).inc();
            tracing::error!(
                outbox_id = row.id,
                workflow_id,
                reason,
                "dispatched row failed: its workflow closed without recording"
            );
        }
        Ok(())
    }

    async fn describe(&self, workflow_id: &str) -> Finding {
        let handle = self
            .client
            .get_workflow_handle::<TriggerWorkflow>(workflow_id.to_owned());
        let description = match handle.describe(WorkflowDescribeOptions::default()).await {
            Ok(description) => description,
            Err(temporalio_client::errors::WorkflowInteractionError::NotFound(_)) => {
                return Finding::Closed(
                    "workflow_not_found: no such workflow in the namespace (deleted by \
                     retention, or the database was restored or cloned)"
                        .into(),
                );
            }
            Err(err) => return Finding::Unknown(err.to_string()),
        };
        let reason = match description.status() {
            WorkflowExecutionStatus::Running | WorkflowExecutionStatus::Paused => {
                return Finding::Running;
            }
            WorkflowExecutionStatus::Completed => {
                return match handle.get_result(WorkflowGetResultOptions::default()).await {
                    Ok(outcome) => Finding::Completed(outcome),
                    Err(err) => Finding::Unknown(err.to_string()),
                };
            }
            WorkflowExecutionStatus::Terminated => "workflow_terminated",
            WorkflowExecutionStatus::TimedOut => "workflow_timed_out",
            WorkflowExecutionStatus::Failed => "workflow_failed",
            WorkflowExecutionStatus::Canceled => "workflow_canceled",
            WorkflowExecutionStatus::ContinuedAsNew => "workflow_continued_as_new",
            other => return Finding::Unknown(format!("status {other:?}")),
        };
        Finding::Closed(format!(
            "{reason}: the workflow closed without recording an outcome"
        ))
    }
}
