//! Readiness: PostgreSQL and Temporal both answered on the last call made to each.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::metrics::Metrics;

pub struct Health {
    postgres: AtomicBool,
    temporal: AtomicBool,
    metrics: Metrics,
}

impl Health {
    pub fn new(metrics: Metrics) -> Self {
        metrics.ready.set(0);
        Self {
            postgres: AtomicBool::new(false),
            temporal: AtomicBool::new(false),
            metrics,
        }
    }

    pub fn set_postgres(&self, ok: bool) {
        let was = self.postgres.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!("PostgreSQL reachable");
            } else {
                tracing::warn!("PostgreSQL unreachable; rows stay pending until it returns");
            }
        }
        self.publish();
    }

    pub fn set_temporal(&self, ok: bool) {
        let was = self.temporal.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!("Temporal reachable");
            } else {
                tracing::warn!("Temporal unreachable; rows stay pending until it returns");
            }
        }
        self.publish();
    }

    pub fn postgres(&self) -> bool {
        self.postgres.load(Ordering::Relaxed)
    }

    pub fn temporal(&self) -> bool {
        self.temporal.load(Ordering::Relaxed)
    }

    pub fn ready(&self) -> bool {
        self.postgres() && self.temporal()
    }

    fn publish(&self) {
        self.metrics.ready.set(i64::from(self.ready()));
    }
}
