//! The Temporal worker hosted by the daemon: `trigger_workflow` and the outbox activities on
//! the daemon's task queue (SPEC §0.3).

use deadpool_postgres::Pool;
use temporalio_client::Client;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::metrics::Metrics;
use crate::workflow::{OutboxActivities, TriggerWorkflow, WorkflowSettings};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
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
            perform_max_attempts: self.perform_max_attempts,
            record_timeout: self.record_timeout,
        }
    }
}

/// Runs the worker until `cancel`; in-flight tasks get the graceful shutdown period.
pub async fn run(
    config: &WorkerConfig,
    task_queue: &str,
    client: Client,
    pool: Pool,
    metrics: Metrics,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let runtime = Runtime::from_current_tokio(Default::default())
        .map_err(|e| WorkerError::Runtime(e.to_string()))?;
    let settings = config.workflow_settings();
    let options = WorkerOptions::new(task_queue.to_owned())
        .register_workflow_with_factory::<TriggerWorkflow, _>(move || {
            TriggerWorkflow::new(settings.clone())
        })
        .map_err(|e| WorkerError::Register(e.to_string()))?
        .register_activities(OutboxActivities { pool, metrics })
        .graceful_shutdown_period(config.worker_shutdown_timeout)
        // After a worker dies its sticky queue holds the next task until this expires; keep it
        // short so a restarted worker resumes promptly.
        .sticky_queue_schedule_to_start_timeout(config.sticky_timeout)
        .build();
    let mut worker = Worker::new(&runtime, client, options).map_err(|e| WorkerError::Create {
        queue: task_queue.to_owned(),
        message: e.to_string(),
    })?;
    let shutdown = worker.shutdown_handle();
    let stopper = tokio::spawn(async move {
        cancel.cancelled().await;
        shutdown();
    });
    tracing::info!(
        task_queue,
        django_task_queue = config.django_task_queue,
        "worker started"
    );
    let result = worker.run().await;
    stopper.abort();
    tracing::info!("worker stopped");
    result.map_err(|e| WorkerError::Run(e.to_string()))
}
