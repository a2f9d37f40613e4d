//! The relay's Prometheus metrics (guarantees §6.1); names are listed in docs/contract.md and
//! the Grafana dashboard uses exactly these. The registry also exports the Temporal SDK's own
//! metrics of the hosted worker (`temporal_*`, src/sdk_metrics.rs).

use std::time::Instant;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::db::SCHEMA_VERSION;
use crate::outbox::State;
use crate::sdk_metrics::SdkMeter;

/// Where a drain of the outbox was woken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeSource {
    Notify,
    /// The look-up shortly after a notification, for commits that skipped theirs.
    Settle,
    Poll,
    Reconnect,
}

impl WakeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            WakeSource::Notify => "notify",
            WakeSource::Settle => "settle",
            WakeSource::Poll => "poll",
            WakeSource::Reconnect => "reconnect",
        }
    }
}

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub backlog: IntGauge,
    pub oldest_pending_age: Gauge,
    pub rows: IntGaugeVec,
    pub claimed: IntCounterVec,
    pub started: IntCounterVec,
    pub failed: IntCounterVec,
    pub commit_to_start: Histogram,
    pub wakeups: IntCounterVec,
    pub temporal_duration: HistogramVec,
    pub temporal_errors: IntCounterVec,
    pub postgres_duration: HistogramVec,
    pub postgres_errors: IntCounterVec,
    pub replays: IntCounter,
    pub workflow_outcomes: IntCounterVec,
    pub retention_deleted: IntCounter,
    pub ready: IntGauge,
    pub listener_connected: IntGauge,
    pub dispatched_overdue: IntGauge,
    pub reconciled: IntCounterVec,
    /// Always 1; its labels say which release runs and which schema it needs.
    pub build_info: IntGaugeVec,
    /// Tasks of another site's workflows refused by `record_outcome`.
    pub foreign_site_tasks: IntCounter,
    /// What the SDK's runtime and the worker's client record into (src/worker.rs).
    pub sdk: SdkMeter,
}

/// Label values known in advance are initialized so every series exists from the first scrape.
const CLAIM_SOURCES: [&str; 4] = ["notify", "settle", "poll", "reconnect"];
const START_RESULTS: [&str; 2] = ["started", "already_started"];
const FAIL_REASONS: [&str; 2] = ["bad_payload", "rejected"];
const OUTCOME_STATES: [State; 4] = [State::Done, State::Skipped, State::Failed, State::Cancelled];
const ROW_STATES: [State; 3] = [State::Pending, State::Dispatched, State::Failed];
const TEMPORAL_OPERATIONS: [&str; 3] = ["connect", "start_workflow", "describe_namespace"];
const POSTGRES_QUERIES: [&str; 10] = [
    "delete_finished",
    "record_outcome",
    "connect",
    "claim",
    "mark_dispatched",
    "mark_failed",
    "release_claim",
    "backlog",
    "listen",
    "schema_version",
];

#[derive(Debug, thiserror::Error)]
#[error("cannot register metric: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let (sdk, sdk_collector) = SdkMeter::new();
        registry.register(Box::new(sdk_collector))?;
        let latency_buckets = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ];
        let call_buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let m = Metrics {
            backlog: IntGauge::new(
                "trigger_relay_outbox_backlog",
                "Outbox rows in state pending.",
            )?,
            oldest_pending_age: Gauge::new(
                "trigger_relay_outbox_oldest_pending_age_seconds",
                "Age of the oldest pending outbox row (0 when none).",
            )?,
            rows: IntGaugeVec::new(
                Opts::new("trigger_relay_outbox_rows", "Outbox rows per state."),
                &["state"],
            )?,
            claimed: IntCounterVec::new(
                Opts::new(
                    "trigger_relay_rows_claimed_total",
                    "Rows claimed, by what woke the relay.",
                ),
                &["source"],
            )?,
            started: IntCounterVec::new(
                Opts::new(
                    "trigger_relay_workflows_started_total",
                    "Rows dispatched: a new workflow, or one Temporal already had.",
                ),
                &["result"],
            )?,
            failed: IntCounterVec::new(
                Opts::new(
                    "trigger_relay_rows_failed_total",
                    "Rows marked failed because they can never start.",
                ),
                &["reason"],
            )?,
            commit_to_start: Histogram::with_opts(
                HistogramOpts::new(
                    "trigger_relay_commit_to_start_seconds",
                    "Time from a row's commit (or replay) to its workflow start.",
                )
                .buckets(latency_buckets),
            )?,
            wakeups: IntCounterVec::new(
                Opts::new(
                    "trigger_relay_wakeups_total",
                    "Outbox drains, by what started them.",
                ),
                &["source"],
            )?,
            temporal_duration: HistogramVec::new(
                HistogramOpts::new(
                    "trigger_relay_temporal_request_duration_seconds",
                    "Latency of Temporal calls.",
                )
                .buckets(call_buckets.clone()),
                &["operation"],
            )?,
            temporal_errors: IntCounterVec::new(
                Opts::new(
                    "trigger_relay_temporal_errors_total",
                    "Failed Temporal calls.",
                ),
                &["operation"],
            )?,
            postgres_duration: HistogramVec::new(
                HistogramOpts::new(
                    "trigger_relay_postgres_query_duration_seconds",
                    "Latency of PostgreSQL queries.",
                )
                .buckets(call_buckets),
                &["query"],
            )?,
            postgres_errors: IntCounterVec::new(
                Opts::new(
                    "trigger_relay_postgres_errors_total",
                    "Failed PostgreSQL queries and connections.",
                ),
                &["query"],
            )?,
            replays: IntCounter::new(
                "trigger_relay_replays_total",
                "Replayed rows (generation > 0) dispatched again.",
            )?,
            workflow_outcomes: IntCounterVec::new(
                Opts::new(
                    "trigger_relay_workflow_outcomes_total",
                    "Firings finished by the trigger workflow, by the state recorded.",
                ),
                &["state"],
            )?,
            retention_deleted: IntCounter::new(
                "trigger_relay_retention_deleted_total",
                "Finished rows deleted by retention.",
            )?,
            ready: IntGauge::new(
                "trigger_relay_ready",
                "1 when PostgreSQL and Temporal are reachable, else 0.",
            )?,
            listener_connected: IntGauge::new(
                "trigger_relay_listener_connected",
                "1 while the LISTEN connection is up, else 0.",
            )?,
            dispatched_overdue: IntGauge::new(
                "trigger_relay_dispatched_overdue",
                "Dispatched rows whose due time passed more than TRIGGER_RELAY_RECONCILE_AFTER \
                 ago (refreshed by each reconcile pass).",
            )?,
            reconciled: IntCounterVec::new(
                Opts::new(
                    "trigger_relay_reconciled_total",
                    "Dispatched rows settled by the reconciler, by what it found: a workflow \
                     closed without recording (failed), or a result it recorded (recorded).",
                ),
                &["result"],
            )?,
            build_info: IntGaugeVec::new(
                Opts::new(
                    "trigger_relay_build_info",
                    "Always 1: the release of this daemon (version) and the outbox schema \
                     version it needs (schema_version).",
                ),
                &["version", "schema_version"],
            )?,
            foreign_site_tasks: IntCounter::new(
                "trigger_relay_foreign_site_tasks_total",
                "record_outcome tasks of another site (one that shares this namespace and task \
                 queue) refused before touching the database.",
            )?,
            registry,
            sdk,
        };
        m.register_all()?;
        m.initialize_labels();
        Ok(m)
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let r = &self.registry;
        r.register(Box::new(self.backlog.clone()))?;
        r.register(Box::new(self.oldest_pending_age.clone()))?;
        r.register(Box::new(self.rows.clone()))?;
        r.register(Box::new(self.claimed.clone()))?;
        r.register(Box::new(self.started.clone()))?;
        r.register(Box::new(self.failed.clone()))?;
        r.register(Box::new(self.commit_to_start.clone()))?;
        r.register(Box::new(self.wakeups.clone()))?;
        r.register(Box::new(self.temporal_duration.clone()))?;
        r.register(Box::new(self.temporal_errors.clone()))?;
        r.register(Box::new(self.postgres_duration.clone()))?;
        r.register(Box::new(self.postgres_errors.clone()))?;
        r.register(Box::new(self.replays.clone()))?;
        r.register(Box::new(self.workflow_outcomes.clone()))?;
        r.register(Box::new(self.retention_deleted.clone()))?;
        r.register(Box::new(self.ready.clone()))?;
        r.register(Box::new(self.listener_connected.clone()))?;
        r.register(Box::new(self.dispatched_overdue.clone()))?;
        r.register(Box::new(self.reconciled.clone()))?;
        r.register(Box::new(self.build_info.clone()))?;
        r.register(Box::new(self.foreign_site_tasks.clone()))?;
        Ok(())
    }

    fn initialize_labels(&self) {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), &SCHEMA_VERSION.to_string()])
            .set(1);
        for s in CLAIM_SOURCES {
            self.claimed.with_label_values(&[s]);
            self.wakeups.with_label_values(&[s]);
        }
        for r in START_RESULTS {
            self.started.with_label_values(&[r]);
        }
        for r in FAIL_REASONS {
            self.failed.with_label_values(&[r]);
        }
        for s in OUTCOME_STATES {
            self.workflow_outcomes.with_label_values(&[s.as_str()]);
        }
        for s in ROW_STATES {
            self.rows.with_label_values(&[s.as_str()]);
        }
        for r in ["failed", "recorded"] {
            self.reconciled.with_label_values(&[r]);
        }
        for op in TEMPORAL_OPERATIONS {
            self.temporal_duration.with_label_values(&[op]);
            self.temporal_errors.with_label_values(&[op]);
        }
        for q in POSTGRES_QUERIES {
            self.postgres_duration.with_label_values(&[q]);
            self.postgres_errors.with_label_values(&[q]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(err) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// Times a PostgreSQL call and counts its failure.
    pub async fn postgres<T, E>(
        &self,
        query: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = call.await;
        self.postgres_duration
            .with_label_values(&[query])
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.postgres_errors.with_label_values(&[query]).inc();
        }
        result
    }

    /// Times a Temporal call; `is_error` decides what counts as a failed call.
    pub async fn temporal<T, E>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, E>>,
        is_error: impl FnOnce(&Result<T, E>) -> bool,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = call.await;
        self.temporal_duration
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        if is_error(&result) {
            self.temporal_errors.with_label_values(&[operation]).inc();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_exported_from_the_start() -> Result<(), MetricsError> {
        let m = Metrics::new()?;
        let text = m.render();
        for name in [
            "trigger_relay_outbox_backlog",
            "trigger_relay_outbox_oldest_pending_age_seconds",
            "trigger_relay_outbox_rows{state=\"pending\"}",
            "trigger_relay_rows_claimed_total{source=\"notify\"}",
            "trigger_relay_workflows_started_total{result=\"already_started\"}",
            "trigger_relay_rows_failed_total{reason=\"bad_payload\"}",
            "trigger_relay_commit_to_start_seconds_bucket",
            "trigger_relay_wakeups_total{source=\"poll\"}",
            "trigger_relay_wakeups_total{source=\"settle\"}",
            "trigger_relay_dispatched_overdue",
            "trigger_relay_reconciled_total{result=\"failed\"}",
            "trigger_relay_temporal_request_duration_seconds_bucket",
            "trigger_relay_temporal_errors_total{operation=\"start_workflow\"}",
            "trigger_relay_postgres_query_duration_seconds_bucket",
            "trigger_relay_postgres_errors_total{query=\"claim\"}",
            "trigger_relay_replays_total",
            "trigger_relay_workflow_outcomes_total{state=\"skipped\"}",
            "trigger_relay_ready",
            "trigger_relay_listener_connected",
            "trigger_relay_foreign_site_tasks_total",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        Ok(())
    }

    #[test]
    fn build_info_names_the_release_and_the_schema_it_needs() -> Result<(), MetricsError> {
        let text = Metrics::new()?.render();
        let line = format!(
            "trigger_relay_build_info{{schema_version=\"{SCHEMA_VERSION}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&line), "{line} missing from:\n{text}");
        Ok(())
    }
}
