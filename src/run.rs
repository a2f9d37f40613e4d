//! `trigger-relay run`: wires the HTTP endpoint, the listener, the relay and the backlog
//! watcher to one cancellation token.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::RunConfig;
use crate::db::{self, DbError};
use crate::error::Error;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::relay::{self, Relay};
use crate::{http, shutdown, temporal, worker};

pub async fn run(config: RunConfig) -> Result<(), Error> {
    config.validate().map_err(Error::Config)?;
    let config = Arc::new(config);
    let replica = config.replica_name();
    let cancel = shutdown::on_signals()?;
    let metrics = Metrics::new().map_err(|e| Error::Config(e.to_string()))?;
    let health = Arc::new(Health::new(metrics.clone()));
    let http = http::serve(
        config.metrics_addr,
        metrics.clone(),
        health.clone(),
        cancel.clone(),
    )
    .await?;

    let pg = db::pg_config(&config.database)?;
    let pool = db::pool(&config.database)?;
    tracing::info!(
        replica,
        database = db::describe(&pg),
        temporal = %config.temporal.temporal_address,
        namespace = config.temporal.temporal_namespace,
        task_queue = config.temporal.temporal_task_queue,
        mode = ?config.mode,
        listen = config.listen,
        poll_interval = ?config.poll_interval,
        "trigger-relay starting"
    );

    let Some(()) = wait_for_schema(&pool, &config, &metrics, &health, &cancel).await? else {
        http.await.ok();
        return Ok(());
    };
    let Some(client) = connect_temporal(&config, &replica, &metrics, &health, &cancel).await?
    else {
        http.await.ok();
        return Ok(());
    };

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(relay::watch(
        pool.clone(),
        client.clone(),
        metrics.clone(),
        health.clone(),
        config.stats_interval,
        cancel.clone(),
    ));
    if let (true, Some(keep_for)) = (config.mode.relay(), config.retention) {
        tasks.spawn(relay::retention::run(
            pool.clone(),
            metrics.clone(),
            keep_for,
            config.retention_interval,
            cancel.clone(),
        ));
    }
    let relay_task = config.mode.relay().then(|| {
        let (wake_tx, wake_rx) = mpsc::channel(1);
        if config.listen {
            tasks.spawn(relay::listener::run(
                pg.clone(),
                wake_tx,
                metrics.clone(),
                Backoff::new(config.backoff_initial, config.backoff_max),
                cancel.clone(),
            ));
        } else {
            tracing::info!("poll-only mode: LISTEN disabled");
            drop(wake_tx);
        }
        let relay = Relay {
            pool: pool.clone(),
            config: config.clone(),
            replica: replica.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
        };
        tokio::spawn(relay.run(client.clone(), wake_rx, cancel.clone()))
    });
    // The SDK's worker future is not Send: it runs on this task rather than a spawned one.
    let mut outcome = Ok(());
    if config.mode.worker() {
        let hosted = worker::HostedWorker {
            config: config.worker.clone(),
            temporal: config.temporal.clone(),
            identity: format!("trigger-relay@{replica}"),
            pool: pool.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
        };
        let backoff = Backoff::new(config.backoff_initial, config.backoff_max);
        let result = hosted.run(backoff, cancel.clone()).await;
        if let Err(err) = result {
            // A worker that can never run (bad registration) takes the process down: a
            // sidecar that silently stopped executing workflows would look healthy.
            outcome = Err(err.into());
            cancel.cancel();
        }
    }
    cancel.cancelled().await;
    // In-flight starts finish (their rows get recorded); anything slower than the bound is
    // left to its lease.
    if let Some(relay_task) = relay_task
        && tokio::time::timeout(config.shutdown_timeout, relay_task)
            .await
            .is_err()
    {
        tracing::warn!(timeout = ?config.shutdown_timeout,
                       "in-flight starts did not finish in time; their leases will expire");
    }
    tasks.shutdown().await;
    http.await.ok();
    tracing::info!("trigger-relay stopped");
    outcome
}

/// Waits out PostgreSQL outages at start (serving metrics, not ready) but refuses a schema
/// it does not know. `None` means shutdown was requested while waiting.
async fn wait_for_schema(
    pool: &deadpool_postgres::Pool,
    config: &RunConfig,
    metrics: &Metrics,
    health: &Health,
    cancel: &CancellationToken,
) -> Result<Option<()>, Error> {
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    loop {
        match metrics
            .postgres("schema_version", db::check_schema(pool))
            .await
        {
            Ok(()) => {
                health.set_postgres(true);
                return Ok(Some(()));
            }
            Err(err @ (DbError::SchemaMissing(_) | DbError::SchemaMismatch { .. })) => {
                return Err(err.into());
            }
            Err(err) => {
                health.set_postgres(false);
                let delay = backoff.next_delay();
                tracing::warn!(error = %err, retry_in = ?delay, "cannot check the outbox schema");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn connect_temporal(
    config: &RunConfig,
    replica: &str,
    metrics: &Metrics,
    health: &Health,
    cancel: &CancellationToken,
) -> Result<Option<temporalio_client::Client>, Error> {
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let identity = format!("trigger-relay@{replica}");
    loop {
        let connected = metrics
            .temporal(
                "connect",
                temporal::connect(&config.temporal, &identity),
                |r| r.is_err(),
            )
            .await;
        match connected {
            Ok(client) => {
                health.set_temporal(true);
                return Ok(Some(client));
            }
            Err(err @ temporal::TemporalError::ReadFile { .. }) => return Err(err.into()),
            Err(err) => {
                health.set_temporal(false);
                let delay = backoff.next_delay();
                tracing::warn!(error = %err, retry_in = ?delay, "cannot connect to Temporal");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
