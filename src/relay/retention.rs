//! Retention (guarantees §4.7): finished rows are deleted after a configurable age.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::metrics::Metrics;

/// Rows deleted per statement.
const BATCH: i64 = 1_000;

pub async fn run(
    db: Db,
    metrics: Metrics,
    keep_for: Duration,
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
        let mut total = 0u64;
        loop {
            match db.delete_finished(keep_for, BATCH).await {
                Ok(n) => {
                    total += n;
                    metrics.retention_deleted.inc_by(n);
                    if n < BATCH as u64 || cancel.is_cancelled() {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "retention: cannot delete finished rows");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(deleted = total, keep_for = ?keep_for, "retention: deleted finished rows");
        }
    }
}
