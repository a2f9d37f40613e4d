//! Refreshes the backlog gauges and probes Temporal while the relay is idle, so metrics and
//! readiness stay true when no rows flow.

use std::sync::Arc;
use std::time::Duration;

use temporalio_client::Client;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::health::{Component, Health};
use crate::metrics::Metrics;
use crate::outbox::State;
use crate::temporal;

pub async fn run(
    db: Db,
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
        let backlog = db.backlog().await;
        health.record_postgres(&backlog);
        match backlog {
            Ok(b) => {
                metrics.backlog.set(b.pending);
                metrics
                    .oldest_pending_age
                    .set(b.oldest_pending_age.unwrap_or(0.0));
                metrics
                    .rows
                    .with_label_values(&[State::Pending.as_str()])
                    .set(b.pending);
                metrics
                    .rows
                    .with_label_values(&[State::Failed.as_str()])
                    .set(b.failed);
            }
            Err(err) => tracing::debug!(error = %err, "backlog query failed"),
        }
        let probe = metrics
            .temporal("describe_namespace", temporal::probe(&client), |r| {
                r.is_err()
            })
            .await;
        match probe {
            Ok(()) => health.set_ok(Component::Temporal),
            Err(status) => health.set_failing(
                Component::Temporal,
                Some(format!("{:?}: {}", status.code(), status.message())),
            ),
        }
    }
}
