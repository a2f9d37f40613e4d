//! `trigger-relay run`: wires the HTTP endpoint, the listener, the relay, the stats task,
//! retention and the workflow worker to one cancellation token, and supervises them: a task
//! that ends or panics while the daemon is meant to run flips readiness and ends the process
//! non-zero, so systemd or Kubernetes restart it instead of keeping a ready zombie.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::codec::{self, server::CodecServer};
use crate::config::RunConfig;
use crate::db::{Db, DbError, PgTarget};
use crate::error::Error;
use crate::health::{Component, Health};
use crate::metrics::Metrics;
use crate::relay::{self, Relay};
use crate::{http, shutdown, temporal, worker};

pub async fn run(config: RunConfig) -> Result<(), Error> {
    config.validate().map_err(Error::Config)?;
    // Keys and the codec endpoint's token are checked before anything runs: a daemon told to
    // encrypt never starts without its keys (src/codec/).
    let codec = config
        .temporal
        .codec
        .load()
        .map_err(|e| Error::Config(e.to_string()))?;
    let codec_server = CodecServer::from_config(&config.codec_server, codec.clone())
        .map_err(|e| Error::Config(e.to_string()))?;
    codec::log_status(codec.as_deref(), config.visibility_personal_data);
    let config = Arc::new(config);
    let replica = config.replica_name();
    let cancel = shutdown::on_signals()?;
    let metrics = Metrics::new().map_err(|e| Error::Config(e.to_string()))?;
    let health = Arc::new(Health::new(metrics.clone()));
    let http = http::serve(
        config.metrics_addr,
        metrics.clone(),
        health.clone(),
        codec_server,
        cancel.clone(),
    )
    .await?;

    let target = PgTarget::new(&config.database)?;
    let db = Db::new(
        &target,
        &config.database,
        config.relay_pool_size(),
        metrics.clone(),
    )?;
    tracing::info!(
        replica,
        database = %target.describe(),
        temporal = %config.temporal.temporal_address,
        namespace = config.temporal.temporal_namespace,
        task_queue = config.temporal.temporal_task_queue,
        mode = ?config.mode,
        listen = config.listen,
        poll_interval = ?config.poll_interval,
        "trigger-relay starting"
    );

    let Some(site) = wait_for_schema(&db, &config, &health, &cancel).await? else {
        http.await.ok();
        return Ok(());
    };
    let Some(client) = connect_temporal(&config, &replica, &metrics, &health, &cancel).await?
    else {
        http.await.ok();
        return Ok(());
    };

    let mut tasks = Tasks::new(config.test_panic_task.clone());
    tasks.spawn(
        "stats",
        relay::stats::run(
            db.clone(),
            client.clone(),
            metrics.clone(),
            health.clone(),
            config.stats_interval,
            cancel.clone(),
        ),
    );
    if config.mode.relay() {
        if let Some(keep_for) = config.retention {
            tasks.spawn(
                "retention",
                relay::retention::run(
                    db.clone(),
                    metrics.clone(),
                    keep_for,
                    config.retention_interval,
                    cancel.clone(),
                ),
            );
        }
        let reconciler = relay::reconcile::Reconciler {
            db: db.clone(),
            client: client.clone(),
            metrics: metrics.clone(),
            replica: replica.clone(),
            interval: config.reconcile_interval,
            after: config.reconcile_after,
        };
        tasks.spawn("reconciler", reconciler.run(cancel.clone()));
        let (wake_tx, wake_rx) = mpsc::channel(1);
        if config.listen {
            tasks.spawn(
                "listener",
                relay::listener::run(
                    target.clone(),
                    config.listen_liveness,
                    wake_tx,
                    metrics.clone(),
                    Backoff::new(config.backoff_initial, config.backoff_max),
                    cancel.clone(),
                ),
            );
        } else {
            tracing::info!("poll-only mode: LISTEN disabled");
            drop(wake_tx);
        }
        // Says at start which search attributes the namespace lacks (one line, with the
        // command that adds them); the relay then sends only the present ones.
        let search_attributes = Arc::new(crate::search_attributes::Registry::new(
            config.temporal.temporal_namespace.clone(),
        ));
        search_attributes.present(&client).await;
        let relay = Relay {
            db: db.clone(),
            config: config.clone(),
            replica: replica.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            search_attributes,
            trigger_names_paused_until: std::sync::Mutex::new(None),
            site: site.clone(),
        };
        tasks.spawn("relay", relay.run(client.clone(), wake_rx, cancel.clone()));
    }

    // The SDK's worker future is not Send: it runs on this task rather than a spawned one,
    // while this task also watches the spawned ones.
    let hosted = if config.mode.worker() {
        let worker_db = Db::new(
            &target,
            &config.database,
            usize::from(config.worker.worker_database_pool_size),
            metrics.clone(),
        )?;
        Some(worker::HostedWorker {
            config: config.worker.clone(),
            temporal: config.temporal.clone(),
            identity: format!("trigger-relay@{replica}"),
            db: worker_db,
            metrics: metrics.clone(),
            health: health.clone(),
            site: site.clone(),
        })
    } else {
        None
    };
    let backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let worker = async {
        match &hosted {
            Some(hosted) => hosted.run(backoff, cancel.clone()).await,
            None => {
                cancel.cancelled().await;
                Ok(())
            }
        }
    };
    tokio::pin!(worker);
    let mut failure: Option<Error> = None;
    let worker_result = loop {
        tokio::select! {
            result = &mut worker => break result,
            Some(died) = tasks.next_death(&cancel) => {
                tracing::error!(error = %died, "a task of the daemon died");
                health.task_died(died.to_string());
                failure.get_or_insert(died);
                cancel.cancel();
            }
        }
    };
    if let Err(err) = worker_result {
        // A worker that can never run (bad registration) takes the process down: a sidecar
        // that silently stopped executing workflows would look healthy.
        health.task_died(err.to_string());
        failure.get_or_insert(err.into());
    }
    cancel.cancel();
    // In-flight starts finish (their rows get recorded); anything slower than the bound is
    // left to its lease.
    if tokio::time::timeout(config.shutdown_timeout, tasks.join_all())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?config.shutdown_timeout,
                       "in-flight work did not finish in time; claimed rows return after their lease");
    }
    tasks.abort_all().await;
    http.await.ok();
    tracing::info!("trigger-relay stopped");
    match failure {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// The daemon's long-running tasks, each named, each expected to run until cancellation.
struct Tasks {
    set: JoinSet<&'static str>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
    panic_task: Option<String>,
}

impl Tasks {
    fn new(panic_task: Option<String>) -> Self {
        Self {
            set: JoinSet::new(),
            names: std::collections::HashMap::new(),
            panic_task,
        }
    }

    fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let inject_panic = self.panic_task.as_deref() == Some(name);
        let handle = self.set.spawn(async move {
            if inject_panic {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                panic!("TRIGGER_RELAY_TEST_PANIC_TASK={name}: injected panic");
            }
            task.await;
            name
        });
        self.names.insert(handle.id(), name);
    }

    /// The next task that ended before cancellation, as the error that ends the process.
    /// Never resolves while all tasks run (or when there are none).
    async fn next_death(&mut self, cancel: &CancellationToken) -> Option<Error> {
        loop {
            match self.set.join_next().await {
                None => std::future::pending::<()>().await,
                Some(Ok(_)) if cancel.is_cancelled() => continue,
                Some(Ok(task)) => {
                    return Some(Error::TaskDied {
                        task,
                        how: "ended unexpectedly".into(),
                    });
                }
                Some(Err(err)) if err.is_cancelled() => continue,
                Some(Err(err)) => {
                    return Some(Error::TaskDied {
                        task: self.names.get(&err.id()).copied().unwrap_or("unnamed"),
                        how: panic_message(err),
                    });
                }
            }
        }
    }

    async fn join_all(&mut self) {
        while self.set.join_next().await.is_some() {}
    }

    async fn abort_all(&mut self) {
        self.set.shutdown().await;
    }
}

fn panic_message(err: JoinError) -> String {
    match err.try_into_panic() {
        Ok(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".into());
            format!("panicked: {message}")
        }
        Err(err) => format!("failed: {err}"),
    }
}

/// Waits out PostgreSQL outages at start (serving metrics, not ready) but refuses a schema
/// it does not know; then the site identity: TRIGGER_RELAY_SITE, else the database's.
/// `None` means shutdown was requested while waiting.
async fn wait_for_schema(
    db: &Db,
    config: &RunConfig,
    health: &Health,
    cancel: &CancellationToken,
) -> Result<Option<String>, Error> {
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    loop {
        let checked = match db.check_schema().await {
            Ok(()) => match &config.site {
                Some(site) => Ok(site.clone()),
                None => db.site_id().await,
            },
            Err(err) => Err(err),
        };
        match checked {
            Ok(site) => {
                health.set_ok(Component::Postgres);
                tracing::info!(site, "site identity");
                return Ok(Some(site));
            }
            Err(
                err @ (DbError::SchemaMissing(_)
                | DbError::SchemaMismatch { .. }
                | DbError::SiteMissing { .. }),
            ) => {
                return Err(err.into());
            }
            Err(err) => {
                health.set_failing(Component::Postgres, Some(err.to_string()));
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
                health.set_ok(Component::Temporal);
                return Ok(Some(client));
            }
            Err(
                err
                @ (temporal::TemporalError::ReadFile { .. } | temporal::TemporalError::Codec(_)),
            ) => return Err(err.into()),
            Err(err) => {
                health.set_failing(Component::Temporal, Some(err.to_string()));
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
