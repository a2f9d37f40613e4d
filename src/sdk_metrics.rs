//! The Temporal SDK's own metrics (task slots, pollers, sticky cache, task latencies, gRPC
//! request counters) on the daemon's Prometheus registry, so they appear on its /metrics.
//!
//! The SDK records through a `CoreMeter`. Its own Prometheus exporter (temporalio-common's
//! `prometheus` feature) pulls in hyper for an HTTP server of its own, and its meter cannot
//! be built on another registry (`CorePrometheusMeter::new` is private), so the daemon
//! implements the trait on its registry, with no new dependency. Names and units follow the
//! Python worker's exporter (`PrometheusConfig(durations_as_seconds=True)`, no `_total` added
//! to counters, no unit suffix): the runtime and the client add the `temporal_` prefix, counters keep the SDK's
//! name (`temporal_workflow_completed`, `temporal_request_failure`), durations are seconds,
//! and every series carries `service_name="temporal-core-sdk"`, so one dashboard query reads
//! both workers.
//!
//! A name recorded with several label sets is one family, as in the SDK's exporter; a name
//! created as two kinds of instrument, or a series Prometheus refuses, is logged once and its
//! values dropped. Nothing here returns an error to the SDK: it treats one as a bug and
//! panics in debug builds.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use temporalio_common::telemetry::TaskQueueLabelStrategy;
use temporalio_common::telemetry::metrics::{
    CoreMeter, Counter, CounterBase, Gauge, GaugeBase, GaugeF64, GaugeF64Base, Histogram,
    HistogramBase, HistogramDuration, HistogramDurationBase, HistogramF64, HistogramF64Base,
    MetricAttributable, MetricAttributes, MetricKeyValue, MetricParameters, NewAttributes,
    OrderedPromLabelSet, TemporalMeter, UpDownCounter, UpDownCounterBase, default_buckets_for,
};

/// What the runtime prefixes core's metric names with (`TelemetryOptions::metric_prefix`'s
/// default); the client's meter, built here, adds it itself.
const PREFIX: &str = "temporal_";

/// The `service_name` label the runtime puts on every series (`attach_service_name`, on by
/// default); the client's meter, built here, adds the same.
const SERVICE_NAME: &str = "temporal-core-sdk";

/// Buckets of the task schedule-to-start latencies, in seconds: the signal to add worker
/// replicas. The SDK's defaults (0.1, 0.5, 1, 5, 10, 100, 1000) cannot tell 20 ms from 90 ms;
/// these are the Python worker's (django-trigger-relay's `LATENCY_BUCKETS`), so that the same
/// p95 query reads both workers at the same resolution.
const SCHEDULE_TO_START_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 1800.0,
];

/// Histograms (without the prefix) that get [`SCHEDULE_TO_START_BUCKETS`]; every other one
/// gets the SDK's default buckets for its name, in seconds.
const SCHEDULE_TO_START: [&str; 2] = [
    "workflow_task_schedule_to_start_latency",
    "activity_schedule_to_start_latency",
];

/// The Prometheus instrument behind one metric name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    /// u64 gauges and up-down counters.
    IntGauge,
    Gauge,
    Histogram,
}

/// One label set's instrument of a metric.
#[derive(Clone)]
enum Vector {
    Counter(IntCounterVec),
    IntGauge(IntGaugeVec),
    Gauge(GaugeVec),
    Histogram(HistogramVec),
}

impl Vector {
    fn new(
        kind: Kind,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> Result<Self, prometheus::Error> {
        let opts = Opts::new(name, help);
        Ok(match kind {
            Kind::Counter => Vector::Counter(IntCounterVec::new(opts, labels)?),
            Kind::IntGauge => Vector::IntGauge(IntGaugeVec::new(opts, labels)?),
            Kind::Gauge => Vector::Gauge(GaugeVec::new(opts, labels)?),
            Kind::Histogram => Vector::Histogram(HistogramVec::new(
                HistogramOpts::from(opts).buckets(buckets.to_vec()),
                labels,
            )?),
        })
    }

    fn child(&self, values: &[&str]) -> Result<Child, prometheus::Error> {
        Ok(match self {
            Vector::Counter(v) => Child::Counter(v.get_metric_with_label_values(values)?),
            Vector::IntGauge(v) => Child::IntGauge(v.get_metric_with_label_values(values)?),
            Vector::Gauge(v) => Child::Gauge(v.get_metric_with_label_values(values)?),
            Vector::Histogram(v) => Child::Histogram(v.get_metric_with_label_values(values)?),
        })
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match self {
            Vector::Counter(v) => v.collect(),
            Vector::IntGauge(v) => v.collect(),
            Vector::Gauge(v) => v.collect(),
            Vector::Histogram(v) => v.collect(),
        }
    }
}

/// One metric name: its kind, and one vector per label set the SDK recorded it with. The
/// SDK records some names with several label sets (`temporal_request` with and without
/// `task_queue`, `temporal_request_failure` with and without `status_code`); as the SDK's own
/// exporter does, they are exported as one family.
struct Family {
    kind: Kind,
    help: String,
    buckets: Vec<f64>,
    vectors: HashMap<Vec<String>, Vector>,
}

/// Every SDK metric, shared by the meters handed to the SDK and the collector in the
/// daemon's registry.
#[derive(Default)]
struct Families {
    by_name: RwLock<HashMap<String, Family>>,
    /// Problems logged already: each is logged once, then its values are dropped quietly.
    warned: Mutex<HashSet<String>>,
}

impl Families {
    /// Declares `name` as a metric of `kind`. The SDK creates its instruments again for every
    /// worker (the daemon creates a new one after an outage): the same name and kind share
    /// the series, so counters go on counting. A name declared with another kind is refused.
    fn declare(&self, name: &str, kind: Kind, help: &str, buckets: Vec<f64>) -> bool {
        let mut by_name = self.by_name.write().unwrap_or_else(PoisonError::into_inner);
        match by_name.get(name) {
            Some(family) if family.kind == kind => true,
            Some(family) => {
                let existing = family.kind;
                drop(by_name);
                self.warn_once(
                    format!("kind {name} {kind:?}"),
                    format_args!(
                        "Temporal SDK metric {name} created as {kind:?} but it is a \
                         {existing:?} already; its values are dropped"
                    ),
                );
                false
            }
            None => {
                // Prometheus refuses an empty help text.
                let help = if help.is_empty() { name } else { help };
                by_name.insert(
                    name.to_owned(),
                    Family {
                        kind,
                        help: help.to_owned(),
                        buckets,
                        vectors: HashMap::new(),
                    },
                );
                true
            }
        }
    }

    /// The series of `name` with `labels`, created on first use; None (logged once) when
    /// Prometheus refuses it (an invalid name or label name).
    fn child(&self, name: &str, labels: &OrderedPromLabelSet) -> Option<Child> {
        let keys: Vec<String> = labels.keys_ordered().map(str::to_owned).collect();
        let vector = self.vector(name, &keys)?;
        let by_key = labels.as_prom_labels();
        let values: Vec<&str> = keys
            .iter()
            .map(|k| by_key.get(k.as_str()).map_or("", String::as_str))
            .collect();
        match vector.child(&values) {
            Ok(child) => Some(child),
            Err(err) => {
                self.warn_once(
                    format!("series {name} {keys:?}"),
                    format_args!("Temporal SDK metric {name} {keys:?} dropped: {err}"),
                );
                None
            }
        }
    }

    fn vector(&self, name: &str, keys: &[String]) -> Option<Vector> {
        let by_name = self.by_name.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(vector) = by_name.get(name)?.vectors.get(keys) {
            return Some(vector.clone());
        }
        drop(by_name);
        let mut by_name = self.by_name.write().unwrap_or_else(PoisonError::into_inner);
        let family = by_name.get_mut(name)?;
        if let Some(vector) = family.vectors.get(keys) {
            return Some(vector.clone());
        }
        let label_names: Vec<&str> = keys.iter().map(String::as_str).collect();
        match Vector::new(
            family.kind,
            name,
            &family.help,
            &family.buckets,
            &label_names,
        ) {
            Ok(vector) => {
                family.vectors.insert(keys.to_vec(), vector.clone());
                Some(vector)
            }
            Err(err) => {
                drop(by_name);
                self.warn_once(
                    format!("vector {name} {keys:?}"),
                    format_args!("Temporal SDK metric {name} {keys:?} dropped: {err}"),
                );
                None
            }
        }
    }

    fn warn_once(&self, key: String, message: fmt::Arguments<'_>) {
        let first = self
            .warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key);
        if first {
            tracing::warn!("{message}");
        }
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let by_name = self.by_name.read().unwrap_or_else(PoisonError::into_inner);
        by_name
            .values()
            .flat_map(|family| family.vectors.values())
            .flat_map(Vector::collect)
            .collect()
    }
}

/// The Prometheus collector of the SDK's metrics, registered once in the daemon's registry.
///
/// It declares no descriptors (an "unchecked" collector): the SDK creates its metrics while
/// it runs, some names with several label sets, which a registry checking descriptors at
/// registration would refuse. The registry merges what it collects by name.
pub struct SdkCollector(Arc<Families>);

impl Collector for SdkCollector {
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

/// The daemon's `CoreMeter`: what the SDK's runtime and the worker's client record into.
/// Cheap to clone; clones share the series.
#[derive(Clone)]
pub struct SdkMeter {
    families: Arc<Families>,
    /// Added to every name: empty for the runtime (which prefixes names itself), `temporal_`
    /// for the client's meter.
    prefix: &'static str,
}

impl fmt::Debug for SdkMeter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkMeter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl SdkMeter {
    /// A meter and the collector that exports what it records.
    pub fn new() -> (SdkMeter, SdkCollector) {
        let families = Arc::new(Families::default());
        let meter = SdkMeter {
            families: families.clone(),
            prefix: "",
        };
        (meter, SdkCollector(families))
    }

    /// For `TelemetryOptions::metrics`: the runtime adds the `temporal_` prefix and the
    /// `service_name` label itself.
    pub fn for_runtime(&self) -> Arc<dyn CoreMeter> {
        Arc::new(self.clone())
    }

    /// For `ConnectionOptions::metrics_meter` of the worker's client (request counts,
    /// failures and latencies, polls included): as the runtime would build it.
    pub fn for_client(&self) -> TemporalMeter {
        let prefixed = SdkMeter {
            families: self.families.clone(),
            prefix: PREFIX,
        };
        TemporalMeter::new(
            Arc::new(prefixed),
            NewAttributes::new(vec![MetricKeyValue::new("service_name", SERVICE_NAME)]),
            TaskQueueLabelStrategy::UseNormal,
        )
    }

    fn instrument(&self, params: &MetricParameters, kind: Kind) -> Instrument {
        // Prometheus does not allow dashes in names (the SDK's exporter replaces them too).
        let name = format!("{}{}", self.prefix, params.name).replace('-', "_");
        let buckets = if kind == Kind::Histogram {
            buckets_for(&name)
        } else {
            Vec::new()
        };
        let declared = self
            .families
            .declare(&name, kind, &params.description, buckets);
        Instrument {
            families: self.families.clone(),
            name: declared.then_some(name),
            kind,
        }
    }
}

/// Buckets in seconds for histogram `name` (prefixed).
fn buckets_for(name: &str) -> Vec<f64> {
    let base = name.strip_prefix(PREFIX).unwrap_or(name);
    if SCHEDULE_TO_START.contains(&base) {
        SCHEDULE_TO_START_BUCKETS.to_vec()
    } else {
        default_buckets_for(base, true).to_vec()
    }
}

impl CoreMeter for SdkMeter {
    fn new_attributes(&self, attribs: NewAttributes) -> MetricAttributes {
        MetricAttributes::Prometheus {
            labels: Arc::new(attribs.into()),
        }
    }

    fn extend_attributes(
        &self,
        existing: MetricAttributes,
        attribs: NewAttributes,
    ) -> MetricAttributes {
        let mut labels = match existing {
            MetricAttributes::Prometheus { labels } => Arc::unwrap_or_clone(labels),
            _ => OrderedPromLabelSet::new(),
        };
        for kv in attribs.attributes {
            labels.add_kv(kv);
        }
        MetricAttributes::Prometheus {
            labels: Arc::new(labels),
        }
    }

    fn counter(&self, params: MetricParameters) -> Counter {
        Counter::new(Arc::new(self.instrument(&params, Kind::Counter)))
    }

    fn histogram(&self, params: MetricParameters) -> Histogram {
        Histogram::new(Arc::new(self.instrument(&params, Kind::Histogram)))
    }

    fn histogram_f64(&self, params: MetricParameters) -> HistogramF64 {
        HistogramF64::new(Arc::new(self.instrument(&params, Kind::Histogram)))
    }

    fn histogram_duration(&self, params: MetricParameters) -> HistogramDuration {
        // Seconds, as the Python worker's `durations_as_seconds=True`; no unit in the name.
        HistogramDuration::new(Arc::new(self.instrument(&params, Kind::Histogram)))
    }

    fn gauge(&self, params: MetricParameters) -> Gauge {
        Gauge::new(Arc::new(self.instrument(&params, Kind::IntGauge)))
    }

    fn gauge_f64(&self, params: MetricParameters) -> GaugeF64 {
        GaugeF64::new(Arc::new(self.instrument(&params, Kind::Gauge)))
    }

    fn up_down_counter(&self, params: MetricParameters) -> UpDownCounter {
        UpDownCounter::new(Arc::new(self.instrument(&params, Kind::IntGauge)))
    }
}

/// One instrument the SDK created; `name` is None when it could not be declared (its
/// values are dropped).
struct Instrument {
    families: Arc<Families>,
    name: Option<String>,
    kind: Kind,
}

impl Instrument {
    /// The series for `attributes`. Never an error: the SDK treats an error here as a bug
    /// and panics in debug builds (`dbg_panic!`); a series that cannot exist is logged once
    /// and its values dropped instead.
    fn bind(&self, attributes: &MetricAttributes) -> Child {
        let Some(name) = &self.name else {
            return Child::Dropped;
        };
        let empty;
        let labels = match attributes {
            MetricAttributes::Prometheus { labels } => labels.as_ref(),
            MetricAttributes::Empty => {
                empty = OrderedPromLabelSet::new();
                &empty
            }
            other => {
                self.families.warn_once(
                    format!("attributes {name}"),
                    format_args!(
                        "Temporal SDK metric {name} recorded with attributes of another \
                         meter ({other:?}); its values are dropped"
                    ),
                );
                return Child::Dropped;
            }
        };
        match self.families.child(name, labels) {
            Some(child) if child.kind() == Some(self.kind) => child,
            _ => Child::Dropped,
        }
    }
}

/// One series, ready to record.
enum Child {
    Counter(prometheus::IntCounter),
    IntGauge(prometheus::IntGauge),
    Gauge(prometheus::Gauge),
    Histogram(prometheus::Histogram),
    Dropped,
}

impl Child {
    fn kind(&self) -> Option<Kind> {
        match self {
            Child::Counter(_) => Some(Kind::Counter),
            Child::IntGauge(_) => Some(Kind::IntGauge),
            Child::Gauge(_) => Some(Kind::Gauge),
            Child::Histogram(_) => Some(Kind::Histogram),
            Child::Dropped => None,
        }
    }

    fn observe(&self, value: f64) {
        if let Child::Histogram(h) = self {
            h.observe(value);
        }
    }
}

impl CounterBase for Child {
    fn adds(&self, value: u64) {
        if let Child::Counter(c) = self {
            c.inc_by(value);
        }
    }
}

impl GaugeBase for Child {
    fn records(&self, value: u64) {
        if let Child::IntGauge(g) = self {
            g.set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }
}

impl UpDownCounterBase for Child {
    fn adds(&self, value: i64) {
        if let Child::IntGauge(g) = self {
            g.add(value);
        }
    }
}

impl GaugeF64Base for Child {
    fn records(&self, value: f64) {
        if let Child::Gauge(g) = self {
            g.set(value);
        }
    }
}

impl HistogramBase for Child {
    fn records(&self, value: u64) {
        // Precision is lost above 2^53 only, far beyond any count or size the SDK records.
        self.observe(value as f64);
    }
}

impl HistogramF64Base for Child {
    fn records(&self, value: f64) {
        self.observe(value);
    }
}

impl HistogramDurationBase for Child {
    fn records(&self, value: Duration) {
        self.observe(value.as_secs_f64());
    }
}

/// `MetricAttributable` for every base trait the SDK asks for: bind, then box.
macro_rules! attributable {
    ($($base:ident),*) => {$(
        impl MetricAttributable<Box<dyn $base>> for Instrument {
            fn with_attributes(
                &self,
                attributes: &MetricAttributes,
            ) -> Result<Box<dyn $base>, Box<dyn std::error::Error>> {
                Ok(Box::new(self.bind(attributes)))
            }
        }
    )*};
}

attributable!(
    CounterBase,
    GaugeBase,
    UpDownCounterBase,
    GaugeF64Base,
    HistogramBase,
    HistogramF64Base,
    HistogramDurationBase
);

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, Registry, TextEncoder};

    fn render(registry: &Registry) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buffer)
            .expect("encode");
        String::from_utf8(buffer).expect("utf-8")
    }

    fn setup() -> (SdkMeter, Registry) {
        let (meter, collector) = SdkMeter::new();
        let registry = Registry::new();
        registry.register(Box::new(collector)).expect("register");
        (meter, registry)
    }

    fn attrs(meter: &SdkMeter, kvs: &[(&str, &str)]) -> MetricAttributes {
        meter.new_attributes(NewAttributes::new(
            kvs.iter()
                .map(|(k, v)| MetricKeyValue::new(*k, v.to_string()))
                .collect(),
        ))
    }

    #[test]
    fn series_carry_their_labels_and_values() {
        let (meter, registry) = setup();
        let base = attrs(&meter, &[("namespace", "default"), ("task_queue", "q")]);
        let slots = meter.gauge("temporal_worker_task_slots_available".into());
        let workflow = meter.extend_attributes(
            base.clone(),
            NewAttributes::new(vec![MetricKeyValue::new("worker_type", "WorkflowWorker")]),
        );
        slots.record(100, &workflow);
        let completed = meter.counter("temporal_workflow_completed".into());
        completed.add(2, &base);
        let text = render(&registry);
        assert!(
            text.contains(
                "temporal_worker_task_slots_available{namespace=\"default\",task_queue=\"q\",\
                 worker_type=\"WorkflowWorker\"} 100"
            ),
            "{text}"
        );
        // No `_total` added: the Python worker's exporter adds none either.
        assert!(
            text.contains("temporal_workflow_completed{namespace=\"default\",task_queue=\"q\"} 2"),
            "{text}"
        );
        assert!(text.contains("# TYPE temporal_workflow_completed counter"));
    }

    #[test]
    fn durations_are_seconds_with_the_sdk_buckets() {
        let (meter, registry) = setup();
        let labels = attrs(&meter, &[("task_queue", "q")]);
        meter
            .histogram_duration("temporal_workflow_task_execution_latency".into())
            .record(Duration::from_millis(15), &labels);
        meter
            .histogram_duration("temporal_workflow_task_schedule_to_start_latency".into())
            .record(Duration::from_millis(30), &labels);
        let text = render(&registry);
        // The SDK's default buckets for workflow task execution, in seconds (1 ms .. 1 s).
        assert!(
            text.contains(
                "temporal_workflow_task_execution_latency_bucket{task_queue=\"q\",le=\"0.02\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("temporal_workflow_task_execution_latency_sum{task_queue=\"q\"} 0.015"),
            "{text}"
        );
        // Schedule-to-start: the finer buckets.
        assert!(
            text.contains(
                "temporal_workflow_task_schedule_to_start_latency_bucket{task_queue=\"q\",\
                 le=\"0.025\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "temporal_workflow_task_schedule_to_start_latency_bucket{task_queue=\"q\",\
                 le=\"0.05\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_name_with_several_label_sets_is_one_family() {
        let (meter, registry) = setup();
        let failures = meter.counter("temporal_request_failure".into());
        failures.add(
            1,
            &attrs(&meter, &[("operation", "StartWorkflowExecution")]),
        );
        failures.add(
            3,
            &attrs(
                &meter,
                &[
                    ("operation", "PollWorkflowTaskQueue"),
                    ("status_code", "UNAVAILABLE"),
                ],
            ),
        );
        let text = render(&registry);
        assert_eq!(
            text.matches("# TYPE temporal_request_failure counter")
                .count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("temporal_request_failure{operation=\"StartWorkflowExecution\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "temporal_request_failure{operation=\"PollWorkflowTaskQueue\",\
                 status_code=\"UNAVAILABLE\"} 3"
            ),
            "{text}"
        );
    }

    #[test]
    fn instruments_created_again_keep_counting() {
        // A new worker (after an outage) creates its instruments again.
        let (meter, registry) = setup();
        let labels = attrs(&meter, &[("task_queue", "q")]);
        meter
            .counter("temporal_workflow_completed".into())
            .add(1, &labels);
        meter
            .counter("temporal_workflow_completed".into())
            .add(1, &labels);
        let text = render(&registry);
        assert!(
            text.contains("temporal_workflow_completed{task_queue=\"q\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn conflicts_are_dropped_without_panic_or_error() {
        let (meter, registry) = setup();
        let labels = attrs(&meter, &[("task_queue", "q")]);
        meter.counter("temporal_conflict".into()).add(1, &labels);
        // The same name as another kind: dropped (a panic here would fail the test, and
        // `with_attributes` returning an error would panic in the SDK's debug assertions).
        meter.gauge("temporal_conflict".into()).record(7, &labels);
        meter
            .histogram_duration("temporal_conflict".into())
            .record(Duration::from_secs(1), &labels);
        // A label name Prometheus refuses, and a metric name it refuses: dropped.
        meter
            .counter("temporal_bad_label".into())
            .add(1, &attrs(&meter, &[("bad label", "x")]));
        meter.counter("temporal bad name".into()).add(1, &labels);
        // Attributes of another meter: dropped.
        meter
            .counter("temporal_foreign".into())
            .add(1, &MetricAttributes::NoOp(Arc::new(HashMap::new())));
        let text = render(&registry);
        assert!(
            text.contains("temporal_conflict{task_queue=\"q\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("temporal_conflict{task_queue=\"q\"} 7"),
            "{text}"
        );
        assert!(!text.contains("temporal_conflict_bucket"), "{text}");
        assert!(!text.contains("temporal_bad_label"), "{text}");
        assert!(!text.contains("temporal bad name"), "{text}");
        assert!(!text.contains("temporal_foreign"), "{text}");
        let warned = meter.families.warned.lock().expect("lock").len();
        assert_eq!(warned, 5, "each problem logged once");
        // Recording again logs nothing new.
        meter.gauge("temporal_conflict".into()).record(8, &labels);
        assert_eq!(meter.families.warned.lock().expect("lock").len(), 5);
    }

    #[test]
    fn the_client_meter_prefixes_and_labels_like_the_runtime() {
        let (meter, registry) = setup();
        let client = meter.for_client();
        let counter = client.counter("long_request".into());
        let labels = client.extend_attributes(
            client.get_default_attributes().clone(),
            NewAttributes::new(vec![MetricKeyValue::new(
                "operation",
                "PollWorkflowTaskQueue",
            )]),
        );
        counter.add(1, &labels);
        let text = render(&registry);
        assert!(
            text.contains(
                "temporal_long_request{operation=\"PollWorkflowTaskQueue\",\
                 service_name=\"temporal-core-sdk\"} 1"
            ),
            "{text}"
        );
    }
}
