//! The relay loop: wake up (NOTIFY, poll timer, reconnect), claim a batch, start one workflow
//! per row, record the outcome; back off while PostgreSQL or Temporal is unreachable
//! (SPEC §4.1-4.5).

pub mod listener;
pub mod retention;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt;
use temporalio_client::Client;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::RunConfig;
use crate::db::{self, DbError};
use crate::health::Health;
use crate::metrics::{Metrics, WakeSource};
use crate::outbox::ClaimedRow;
use crate::temporal::{self, StartOutcome};

/// After a NOTIFY-driven drain, look once more this much later. A transaction that committed
/// while another held the notify lock did not notify (sql/schema/0001_outbox.sql); this
/// catches its rows without waiting for the poll interval.
const NOTIFY_SETTLE: Duration = Duration::from_millis(100);

pub struct Relay {
    pub pool: Pool,
    pub config: Arc<RunConfig>,
    pub replica: String,
    pub metrics: Metrics,
    pub health: Arc<Health>,
}

/// Why a drain stopped early; the loop backs off before the next one.
#[derive(Debug, thiserror::Error)]
enum DrainError {
    #[error(transparent)]
    Postgres(#[from] DbError),
    #[error("Temporal unavailable: {0}")]
    Temporal(String),
}

enum Dispatched {
    Done,
    /// Temporal could not take the start; the row was released and stays pending.
    Unavailable(String),
    /// Shutdown or an earlier outage in this batch: released without a call.
    Released,
}

impl Relay {
    pub async fn run(
        self,
        client: Client,
        mut wakeups: mpsc::Receiver<WakeSource>,
        cancel: CancellationToken,
    ) {
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let mut source = WakeSource::Poll;
        let mut settling = false;
        loop {
            match self.drain(&client, source, &cancel).await {
                Ok(()) => backoff.reset(),
                Err(err) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %err, retry_in = ?delay, failures = backoff.failures(),
                                   "outbox drain interrupted");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    source = WakeSource::Poll;
                    continue;
                }
            }
            // The settle look-up follows a real notification only, never another settle.
            let settle =
                (source == WakeSource::Notify && !settling).then(|| Instant::now() + NOTIFY_SETTLE);
            settling = false;
            source = tokio::select! {
                _ = cancel.cancelled() => return,
                Some(woken_by) = wakeups.recv() => woken_by,
                _ = tokio::time::sleep(self.config.poll_interval) => WakeSource::Poll,
                _ = sleep_until_some(settle) => {
                    settling = true;
                    WakeSource::Notify
                }
            };
            self.metrics
                .wakeups
                .with_label_values(&[source.as_str()])
                .inc();
        }
    }

    /// Claims and dispatches batches until the outbox has no claimable row left.
    async fn drain(
        &self,
        client: &Client,
        source: WakeSource,
        cancel: &CancellationToken,
    ) -> Result<(), DrainError> {
        let batch_size = i64::from(self.config.batch_size);
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let claimed = self
                .metrics
                .postgres(
                    "claim",
                    db::claim(&self.pool, batch_size, &self.replica, self.config.lease),
                )
                .await;
            self.health.set_postgres(claimed.is_ok());
            let rows = claimed?;
            if rows.is_empty() {
                return Ok(());
            }
            let count = rows.len();
            self.metrics
                .claimed
                .with_label_values(&[source.as_str()])
                .inc_by(count as u64);
            tracing::debug!(rows = count, source = source.as_str(), "claimed rows");

            let outage = AtomicBool::new(false);
            let results: Vec<Result<Dispatched, DbError>> = futures::stream::iter(rows)
                .map(|row| self.dispatch(client, row, &outage, cancel))
                .buffer_unordered(usize::from(self.config.max_in_flight))
                .collect()
                .await;
            let mut unavailable = None;
            for result in results {
                match result {
                    Ok(Dispatched::Unavailable(error)) => unavailable = Some(error),
                    Ok(Dispatched::Done | Dispatched::Released) => {}
                    Err(err) => {
                        self.health.set_postgres(false);
                        return Err(err.into());
                    }
                }
            }
            if let Some(error) = unavailable {
                self.health.set_temporal(false);
                return Err(DrainError::Temporal(error));
            }
            if count < usize::from(self.config.batch_size) {
                return Ok(());
            }
        }
    }

    /// One row: check it, start its workflow, record the outcome.
    async fn dispatch(
        &self,
        client: &Client,
        row: ClaimedRow,
        outage: &AtomicBool,
        cancel: &CancellationToken,
    ) -> Result<Dispatched, DbError> {
        let workflow_id = row.workflow_id(&self.config.temporal.workflow_id_prefix);
        let input = match row.workflow_input(self.config.max_input_bytes) {
            Ok(input) => input,
            Err(bad) => {
                let error = format!("bad payload: {bad}");
                self.fail(&row, "bad_payload", &error).await?;
                return Ok(Dispatched::Done);
            }
        };
        if outage.load(Ordering::Relaxed) || cancel.is_cancelled() {
            self.release(&row, "released before start (outage or shutdown)")
                .await?;
            return Ok(Dispatched::Released);
        }
        let started_at = std::time::Instant::now();
        let outcome = temporal::start(
            client,
            &self.config.temporal.temporal_task_queue,
            &workflow_id,
            input,
        )
        .await;
        self.metrics
            .temporal_duration
            .with_label_values(&["start_workflow"])
            .observe(started_at.elapsed().as_secs_f64());
        let (run_id, result) = match outcome {
            StartOutcome::Started { run_id } => (Some(run_id), "started"),
            StartOutcome::AlreadyStarted { run_id } => (run_id, "already_started"),
            StartOutcome::Rejected { error } => {
                self.health.set_temporal(true);
                self.fail(&row, "rejected", &format!("rejected by Temporal: {error}"))
                    .await?;
                return Ok(Dispatched::Done);
            }
            StartOutcome::Unavailable { error } => {
                self.metrics
                    .temporal_errors
                    .with_label_values(&["start_workflow"])
                    .inc();
                outage.store(true, Ordering::Relaxed);
                self.release(&row, &error).await?;
                return Ok(Dispatched::Unavailable(error));
            }
        };
        self.health.set_temporal(true);
        let latency = self
            .metrics
            .postgres(
                "mark_dispatched",
                db::mark_dispatched(&self.pool, &row, &workflow_id, run_id.as_deref()),
            )
            .await?;
        self.metrics.started.with_label_values(&[result]).inc();
        if row.generation > 0 {
            self.metrics.replays.inc();
        }
        match latency {
            Some(seconds) => {
                self.metrics.commit_to_start.observe(seconds);
                tracing::debug!(
                    outbox_id = row.id,
                    attempts = row.attempts,
                    workflow_id,
                    result,
                    "row dispatched"
                );
            }
            None => tracing::info!(
                outbox_id = row.id,
                workflow_id,
                "row left pending while its workflow started (cancelled or replayed meanwhile)"
            ),
        }
        Ok(Dispatched::Done)
    }

    async fn fail(
        &self,
        row: &ClaimedRow,
        reason: &'static str,
        error: &str,
    ) -> Result<(), DbError> {
        let marked = self
            .metrics
            .postgres("mark_failed", db::mark_failed(&self.pool, row, error))
            .await?;
        if marked {
            self.metrics.failed.with_label_values(&[reason]).inc();
            tracing::error!(
                outbox_id = row.id,
                generation = row.generation,
                reason,
                error,
                "row failed: it can never start"
            );
        }
        Ok(())
    }

    async fn release(&self, row: &ClaimedRow, error: &str) -> Result<(), DbError> {
        self.metrics
            .postgres(
                "release_claim",
                db::release_claim(&self.pool, row, &self.replica, error),
            )
            .await
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Refreshes the backlog gauges and probes Temporal while the relay is idle, so metrics and
/// readiness stay true when no rows flow.
pub async fn watch(
    pool: Pool,
    client: Client,
    metrics: Metrics,
    health: Arc<Health>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match metrics.postgres("backlog", db::backlog(&pool)).await {
            Ok(b) => {
                health.set_postgres(true);
                metrics.backlog.set(b.pending);
                metrics
                    .oldest_pending_age
                    .set(b.oldest_pending_age.unwrap_or(0.0));
                metrics.rows.with_label_values(&["pending"]).set(b.pending);
                metrics
                    .rows
                    .with_label_values(&["dispatched"])
                    .set(b.dispatched);
                metrics.rows.with_label_values(&["failed"]).set(b.failed);
            }
            Err(err) => {
                health.set_postgres(false);
                tracing::debug!(error = %err, "backlog query failed");
            }
        }
        let probe = metrics
            .temporal("describe_namespace", temporal::probe(&client), |r| {
                r.is_err()
            })
            .await;
        health.set_temporal(probe.is_ok());
    }
}
