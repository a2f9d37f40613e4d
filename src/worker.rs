//! The Temporal worker hosted by the daemon: `trigger_workflow` and the outbox activities on
//! the daemon's task queue (guarantees §0.3).

use std::sync::Arc;

use temporalio_common::telemetry::TelemetryOptions;
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{TemporalConfig, WorkerConfig};
use crate::db::Db;
use crate::health::{Component, Health};
use crate::metrics::Metrics;
use crate::temporal;
use crate::workflow::{OutboxActivities, TriggerWorkflow, WorkflowSettings};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot connect the worker to Temporal: {0}")]
    Connect(String),
    #[error("cannot start the Temporal worker runtime: {0}")]
    Runtime(String),
    #[error("cannot register trigger_workflow: {0}")]
    Register(String),
    #[error("cannot create the Temporal worker on task queue {queue}: {message}")]
    Create { queue: String, message: String },
    #[error("Temporal worker stopped with an error: {0}")]
    Run(String),
}

impl WorkerConfig {
    pub fn workflow_settings(&self) -> WorkflowSettings {
        WorkflowSettings {
            django_task_queue: self.django_task_queue.clone(),
            perform_timeout: self.perform_timeout,
            perform_heartbeat_timeout: self.perform_heartbeat_timeout,
            perform_max_attempts: self.perform_max_attempts,
            record_timeout: self.record_timeout,
        }
    }
}

/// The worker of `trigger_workflow` as the daemon hosts it.
pub struct HostedWorker {
    pub config: WorkerConfig,
    pub temporal: TemporalConfig,
    pub identity: String,
    /// A pool of the worker's own (TRIGGER_RELAY_WORKER_DATABASE_POOL_SIZE).
    pub db: Db,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    /// The site identity the activities check (docs/contract.md, "Site identity").
    pub site: String,
}

impl HostedWorker {
    /// Runs the worker until `cancel`; in-flight tasks get the graceful shutdown period.
    ///
    /// A worker that stops with an error (Temporal unreachable while it validates its
    /// namespace or polls) is created again after a backoff, as the relay retries its calls:
    /// an outage makes the daemon not ready, never makes it exit. Only errors that a retry
    /// cannot fix (runtime, registration) are returned.
    pub async fn run(
        &self,
        mut backoff: Backoff,
        cancel: CancellationToken,
    ) -> Result<(), WorkerError> {
        let runtime = Runtime::from_current_tokio(self.runtime_options()?)
            .map_err(|e| WorkerError::Runtime(e.to_string()))?;
        loop {
            match self.run_once(&runtime, &cancel).await {
                Ok(()) => return Ok(()),
                Err(err @ (WorkerError::Runtime(_) | WorkerError::Register(_))) => {
                    return Err(err);
                }
                Err(_) if cancel.is_cancelled() => return Ok(()),
                Err(err) => {
                    self.health
                        .set_failing(Component::Temporal, Some(err.to_string()));
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %err, retry_in = ?delay, "worker stopped; restarting it");
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// The SDK's worker metrics (task slots, pollers, sticky cache, task latencies) go to the
    /// daemon's registry, served on its /metrics with the relay's; the runtime prefixes them
    /// `temporal_` and labels them `service_name`, as the Python worker's exporter does.
    fn runtime_options(&self) -> Result<RuntimeOptions, WorkerError> {
        let telemetry = TelemetryOptions::builder()
            .metrics(self.metrics.sdk.for_runtime())
            .build();
        RuntimeOptions::builder()
            .telemetry_options(telemetry)
            .build()
            .map_err(WorkerError::Runtime)
    }

    async fn run_once(
        &self,
        runtime: &Runtime,
        cancel: &CancellationToken,
    ) -> Result<(), WorkerError> {
        let settings = self.config.workflow_settings();
        let outcomes = self.metrics.workflow_outcomes.clone();
        let options = WorkerOptions::new(self.temporal.temporal_task_queue.clone())
            .register_workflow_with_factory::<TriggerWorkflow, _>(move || {
                TriggerWorkflow::new(settings.clone(), Some(outcomes.clone()))
            })
            .map_err(|e| WorkerError::Register(e.to_string()))?
            .register_activities(OutboxActivities {
                db: self.db.clone(),
                metrics: self.metrics.clone(),
                site: self.site.clone(),
            })
            .graceful_shutdown_period(self.config.worker_shutdown_timeout)
            // After a worker dies its sticky queue holds the next task until this expires;
            // keep it short so a restarted worker resumes promptly.
            .sticky_queue_schedule_to_start_timeout(self.config.sticky_timeout)
            .max_cached_workflows(
                usize::try_from(self.config.worker_max_cached_workflows).unwrap_or(usize::MAX),
            )
            .build();
        // A client of its own per worker instance: a worker that failed (say, Temporal went
        // away while it validated its namespace) stays registered with the client it was
        // created with, and the SDK refuses a second worker on the same task queue there.
        // Its requests (polls included) are counted into the same registry.
        let client = temporal::connect_with_metrics(
            &self.temporal,
            &self.identity,
            Some(self.metrics.sdk.for_client()),
        )
        .await
        .map_err(|e| WorkerError::Connect(e.to_string()))?;
        let mut worker =
            Worker::new(runtime, client, options).map_err(|e| WorkerError::Create {
                queue: self.temporal.temporal_task_queue.clone(),
                message: e.to_string(),
            })?;
        let shutdown = worker.shutdown_handle();
        let stop_on_cancel = cancel.clone();
        let stopper = tokio::spawn(async move {
            stop_on_cancel.cancelled().await;
            shutdown();
        });
        tracing::info!(
            task_queue = self.temporal.temporal_task_queue,
            django_task_queue = self.config.django_task_queue,
            "worker started"
        );
        let result = worker.run().await;
        stopper.abort();
        tracing::info!("worker stopped");
        result.map_err(|e| WorkerError::Run(e.to_string()))
    }
}
