//! The relay loop: wake up (NOTIFY, poll timer, reconnect), claim a batch, start one workflow
//! per row, record the outcome; back off while PostgreSQL or Temporal is unreachable
//! (guarantees §4.1-4.5).

pub mod listener;
pub mod reconcile;
pub mod retention;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use temporalio_client::Client;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::RunConfig;
use crate::db::{ClaimLimits, Db, DbError, Started};
use crate::health::{Component, Health};
use crate::metrics::{Metrics, WakeSource};
use crate::outbox::{ClaimedRow, PoisonRow};
use crate::search_attributes::{self, Firing, PersonalData, Present, Registry};
use crate::temporal::{self, StartOutcome};

/// After a NOTIFY-driven drain, look once more this much later. A transaction that committed
/// while another held the notify lock did not notify (sql/schema/0001_outbox.sql); this
/// catches its rows without waiting for the poll interval.
const NOTIFY_SETTLE: Duration = Duration::from_millis(100);

/// After the trigger names could not be read for a reason that lasts (no dj-triggers table,
/// no privilege on it), the relay stops asking for this long.
const TRIGGER_NAMES_PAUSE: Duration = Duration::from_secs(300);

pub struct Relay {
    pub db: Db,
    pub config: Arc<RunConfig>,
    pub replica: String,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    /// Which search attributes the namespace has (src/search_attributes.rs).
    pub search_attributes: Arc<Registry>,
    /// Trigger names are not looked up before this (see [`TRIGGER_NAMES_PAUSE`]).
    pub trigger_names_paused_until: std::sync::Mutex<Option<Instant>>,
    /// The site identity written into every workflow input (docs/contract.md).
    pub site: String,
}

/// Why a drain stopped early; the loop backs off before the next one.
#[derive(Debug, thiserror::Error)]
enum DrainError {
    #[error(transparent)]
    Postgres(#[from] DbError),
    #[error("Temporal unavailable: {0}")]
    Temporal(String),
    #[error("Temporal refuses every start (a configuration error, not a row's): {0}")]
    Misconfigured(String),
}

/// What became of one claimed row.
enum Dispatched {
    Started(Started),
    /// Failed for good (its own fault) or left to another writer.
    Settled,
    /// Temporal could not take the start; the row was released and stays pending.
    Unavailable(String),
    /// Temporal refused the start for a reason that holds for every row.
    Misconfigured(String),
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
        // After a PostgreSQL error, a claim or mark_dispatched sent before it may run on the
        // server without its answer reaching us, and not only at once: a network path that
        // comes back delivers a statement it held, so a claim can land after the first
        // drain that follows. Its rows would wait out their lease. For one lease after the
        // last error every drain therefore first hands back this replica's claims; a
        // statement held longer than that is not looked for (its rows wait out the lease).
        let mut orphans_until: Option<Instant> = None;
        loop {
            let look_for_orphans = orphans_until.is_some_and(|until| Instant::now() < until);
            let drained = match self.release_orphans(look_for_orphans).await {
                Ok(()) => self.drain(&client, source, &cancel).await,
                Err(err) => Err(err.into()),
            };
            match drained {
                Ok(()) => backoff.reset(),
                Err(err) => {
                    if matches!(err, DrainError::Postgres(_)) {
                        orphans_until = Some(Instant::now() + self.config.lease);
                    }
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
            let settle = (source == WakeSource::Notify).then(|| Instant::now() + NOTIFY_SETTLE);
            source = tokio::select! {
                _ = cancel.cancelled() => return,
                Some(woken_by) = wakeups.recv() => woken_by,
                _ = tokio::time::sleep(self.config.poll_interval) => WakeSource::Poll,
                _ = sleep_until_some(settle) => WakeSource::Settle,
            };
            self.metrics
                .wakeups
                .with_label_values(&[source.as_str()])
                .inc();
        }
    }

    async fn release_orphans(&self, needed: bool) -> Result<(), DbError> {
        if !needed {
            return Ok(());
        }
        let released = self.db.release_orphaned_claims(&self.replica).await?;
        if released > 0 {
            tracing::info!(released, "handed back claims left by a lost answer");
        }
        Ok(())
    }

    /// Claims and dispatches batches until the outbox has no claimable row left.
    async fn drain(
        &self,
        client: &Client,
        source: WakeSource,
        cancel: &CancellationToken,
    ) -> Result<(), DrainError> {
        // A batch is bounded in rows and in bytes of context: its contexts are held in
        // memory, several times over, until its last start returns (docs/contract.md,
        // "Memory").
        let batch_size = i64::from(self.config.batch_size);
        let mut limits = ClaimLimits {
            rows: batch_size,
            row_bytes: self.config.max_input_bytes,
            batch_bytes: self.config.claim_max_bytes,
        };
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let claimed = self
                .db
                .claim(
                    limits,
                    &self.replica,
                    self.config.lease,
                    &self.config.temporal.workflow_id_prefix,
                )
                .await;
            self.health.record_postgres(&claimed);
            let claim = claimed?;
            let (cut, full) = (claim.cut(), claim.locked >= limits.rows);
            let rows = claim.rows;
            if rows.is_empty() {
                return Ok(());
            }
            let count = rows.len();
            self.metrics
                .claimed
                .with_label_values(&[source.as_str()])
                .inc_by(count as u64);
            tracing::debug!(rows = count, source = source.as_str(), "claimed rows");

            // Trigger names only go to Temporal with the personal data (src/search_attributes.rs).
            let names = if self.config.visibility_personal_data {
                self.trigger_names(&rows).await
            } else {
                HashMap::new()
            };
            let present = self.search_attributes.present(client).await;
            let stop = AtomicBool::new(false);
            let results: Vec<Result<Dispatched, DbError>> = futures::stream::iter(rows)
                .map(|row| async {
                    match row {
                        Ok(row) => {
                            let name = names.get(&row.trigger_id).cloned();
                            self.dispatch(client, row, name, present, &stop, cancel)
                                .await
                        }
                        Err(poison) => self.fail_poison(&poison).await,
                    }
                })
                .buffer_unordered(usize::from(self.config.max_in_flight))
                .collect()
                .await;
            let mut started = Vec::new();
            let mut unavailable = None;
            let mut misconfigured = None;
            let mut db_error = None;
            for result in results {
                match result {
                    Ok(Dispatched::Started(row)) => started.push(row),
                    Ok(Dispatched::Unavailable(error)) => unavailable = Some(error),
                    Ok(Dispatched::Misconfigured(error)) => misconfigured = Some(error),
                    Ok(Dispatched::Settled | Dispatched::Released) => {}
                    Err(err) => db_error = Some(err),
                }
            }
            // Whatever else happened, the rows that started are recorded (one statement).
            self.record_started(&started).await?;
            if let Some(err) = db_error {
                self.health.postgres_error(&err);
                return Err(err.into());
            }
            if let Some(error) = misconfigured {
                self.health
                    .set_failing(Component::Temporal, Some(error.clone()));
                return Err(DrainError::Misconfigured(error));
            }
            if let Some(error) = unavailable {
                self.health
                    .set_failing(Component::Temporal, Some(error.clone()));
                return Err(DrainError::Temporal(error));
            }
            if !cut && !full {
                return Ok(());
            }
            // The claim measures every row it locks. After a cut, the next one asks for
            // twice what fitted, so that a run of large contexts is not measured again and
            // again for rows that go back; it grows back to the batch size as rows fit.
            let returned = i64::try_from(count).unwrap_or(batch_size);
            limits.rows = if cut {
                (2 * returned).clamp(1, batch_size)
            } else {
                (2 * limits.rows).min(batch_size)
            };
        }
    }

    /// The names of the batch's triggers, best effort: a failure leaves the names out (the
    /// workflows start without them) and never stops the relay.
    async fn trigger_names(&self, rows: &[Result<ClaimedRow, PoisonRow>]) -> HashMap<i64, String> {
        let paused = self
            .trigger_names_paused_until
            .lock()
            .map(|until| until.is_some_and(|until| Instant::now() < until))
            .unwrap_or(false);
        if paused {
            return HashMap::new();
        }
        let mut ids: Vec<i64> = rows
            .iter()
            .filter_map(|row| row.as_ref().ok().map(|row| row.trigger_id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        match self.db.trigger_names(&ids).await {
            Ok(names) => names,
            Err(err) => {
                let lasting = matches!(&err, DbError::Query { source, .. }
                if source.code().is_some_and(|code| {
                    *code == tokio_postgres::error::SqlState::UNDEFINED_TABLE
                        || *code == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE
                }));
                if lasting {
                    let first = match self.trigger_names_paused_until.lock() {
                        Ok(mut until) => until
                            .replace(Instant::now() + TRIGGER_NAMES_PAUSE)
                            .is_none(),
                        Err(_) => false,
                    };
                    if !first {
                        tracing::debug!(error = %err, "trigger names still unreadable");
                        return HashMap::new();
                    }
                    tracing::warn!(
                        error = %err,
                        retry_in = ?TRIGGER_NAMES_PAUSE,
                        "cannot read trigger names from triggers_trigger: workflows start \
                         without TriggerName in their memo and search attributes; to add them, \
                         `GRANT SELECT (id, name) ON triggers_trigger TO trigger_relay_daemon` \
                         (README, \"Finding a firing in Temporal\")"
                    );
                } else {
                    tracing::debug!(error = %err, "trigger names left out of this batch");
                }
                HashMap::new()
            }
        }
    }

    async fn record_started(&self, started: &[Started]) -> Result<(), DbError> {
        if started.is_empty() {
            return Ok(());
        }
        let marked = self.db.mark_dispatched(started).await;
        self.health.record_postgres(&marked);
        let marked = marked?;
        for (_, seconds) in &marked {
            self.metrics.commit_to_start.observe(*seconds);
        }
        if marked.len() < started.len() {
            tracing::info!(
                started = started.len(),
                marked = marked.len(),
                "some rows left pending while their workflows started (cancelled, replayed \
                 or already finished meanwhile)"
            );
        }
        Ok(())
    }

    /// One row: check it, start its workflow.
    async fn dispatch(
        &self,
        client: &Client,
        mut row: ClaimedRow,
        trigger_name: Option<String>,
        present: Present,
        stop: &AtomicBool,
        cancel: &CancellationToken,
    ) -> Result<Dispatched, DbError> {
        let workflow_id = row.workflow_id.clone();
        let input = match row.workflow_input(self.config.max_input_bytes, &self.site) {
            Ok(input) => input,
            Err(bad) => {
                let error = format!("bad payload: {bad}");
                self.fail(row.id, row.generation, "bad_payload", &error)
                    .await?;
                return Ok(Dispatched::Settled);
            }
        };
        // The input holds its own copy of the context; the row's goes now, not after the
        // start returns (docs/contract.md, "Memory").
        drop(std::mem::take(&mut row.context));
        if stop.load(Ordering::Relaxed) || cancel.is_cancelled() {
            self.release(&row, "released before start (outage or shutdown)")
                .await?;
            return Ok(Dispatched::Released);
        }
        let firing = Firing {
            outbox_id: row.id,
            trigger_id: row.trigger_id,
            event_id: row.event_id,
            personal: self.config.visibility_personal_data.then(|| PersonalData {
                trigger_name,
                user_pk: row.user_pk.clone(),
            }),
        };
        let started_at = std::time::Instant::now();
        let outcome = temporal::start(
            client,
            &self.config.temporal.temporal_task_queue,
            &workflow_id,
            input,
            &firing,
            present,
        )
        .await;
        self.metrics
            .temporal_duration
            .with_label_values(&["start_workflow"])
            .observe(started_at.elapsed().as_secs_f64());
        let (run_id, result) = match outcome {
            StartOutcome::Started { run_id } => (Some(run_id), "started"),
            // The id holds the firing's uuid: a run with this id is this row's (guarantees §4.3).
            StartOutcome::AlreadyStarted { run_id } => (run_id, "already_started"),
            StartOutcome::RowRejected { error } => {
                self.health.set_ok(Component::Temporal);
                self.fail(
                    row.id,
                    row.generation,
                    "rejected",
                    &format!("rejected by Temporal: {error}"),
                )
                .await?;
                return Ok(Dispatched::Settled);
            }
            StartOutcome::Misconfigured { error } => {
                if search_attributes::is_search_attribute_refusal(&error) {
                    // Removed or retyped since the last check: look again before the next try.
                    self.search_attributes.invalidate().await;
                }
                self.stop_batch(&row, &error, stop).await?;
                return Ok(Dispatched::Misconfigured(error));
            }
            StartOutcome::Unavailable { error } => {
                self.stop_batch(&row, &error, stop).await?;
                return Ok(Dispatched::Unavailable(error));
            }
        };
        self.health.set_ok(Component::Temporal);
        self.metrics.started.with_label_values(&[result]).inc();
        if row.generation > 0 {
            self.metrics.replays.inc();
        }
        tracing::debug!(
            outbox_id = row.id,
            attempts = row.attempts,
            workflow_id,
            result,
            "workflow started"
        );
        Ok(Dispatched::Started(Started {
            id: row.id,
            generation: row.generation,
            workflow_id,
            run_id,
            started_at: chrono::Utc::now(),
        }))
    }

    /// A start that failed for every row: this row goes back to pending, and the rest of
    /// the batch is released without a call.
    async fn stop_batch(
        &self,
        row: &ClaimedRow,
        error: &str,
        stop: &AtomicBool,
    ) -> Result<(), DbError> {
        self.metrics
            .temporal_errors
            .with_label_values(&["start_workflow"])
            .inc();
        stop.store(true, Ordering::Relaxed);
        self.release(row, error).await
    }

    /// A row failed from what the claim said of it: undecodable, or a context too large
    /// to fetch.
    async fn fail_poison(&self, poison: &PoisonRow) -> Result<Dispatched, DbError> {
        self.fail(
            poison.id(),
            poison.generation(),
            "bad_payload",
            &poison.reason(),
        )
        .await?;
        Ok(Dispatched::Settled)
    }

    async fn fail(
        &self,
        id: i64,
        generation: i32,
        reason: &'static str,
        error: &str,
    ) -> Result<(), DbError> {
        if self.db.mark_failed(id, generation, error).await? {
            self.metrics.failed.with_label_values(&[reason]).inc();
            tracing::error!(
                outbox_id = id,
                generation,
                reason,
                error,
                "row failed: it can never start"
            );
        }
        Ok(())
    }

    async fn release(&self, row: &ClaimedRow, error: &str) -> Result<(), DbError> {
        self.db.release_claim(row, &self.replica, error).await
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
