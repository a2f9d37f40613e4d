//! guarantees §6.1: the daemon's hosted workflow worker exports the Temporal SDK's worker metrics
//! on the daemon's own /metrics, named and labelled as the Python worker's exporter does.
//!
//! Real processes: PostgreSQL, a Temporal dev server, the `trigger-relay` binary; a row is
//! dispatched, its workflow waits on its timer, is cancelled (so the daemon's own
//! `record_outcome` activity runs and the workflow completes), and /metrics is scraped over
//! HTTP.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

const TASK_QUEUE: &str = "trigger-relay-sdk-metrics";

/// One sample of the exposition: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Every sample of a Prometheus text exposition (label values without escapes, as here).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once("=\"")?;
                    Some((key.to_owned(), value.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The sum of `name`'s samples that have `labels` (None if there is no such sample).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

async fn scrape(relay: &RelayProcess) -> Vec<Sample> {
    let (code, text) = relay.get("/metrics").await.expect("scrape /metrics");
    assert_eq!(code, 200, "{text}");
    parse(&text)
}

fn temporal_cli(temporal: &TemporalServer, args: &[&str]) {
    let output = std::process::Command::new(temporal_bin())
        .arg("workflow")
        .args(args)
        .args(["--address", &format!("127.0.0.1:{}", temporal.port)])
        .output()
        .expect("temporal CLI");
    assert!(
        output.status.success(),
        "temporal workflow {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosted_worker_exports_the_sdk_metrics() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let relay = RelayProcess::spawn_logged(
        &db.url,
        &temporal.address(),
        &[
            ("TRIGGER_RELAY_POLL_INTERVAL", "1s"),
            ("TRIGGER_RELAY_TEMPORAL_TASK_QUEUE", TASK_QUEUE),
        ],
    );
    relay.wait_ready().await;

    // The worker's labels, as on every series of the Python worker's exporter.
    let ours = [
        ("namespace", "default"),
        ("task_queue", TASK_QUEUE),
        ("service_name", "temporal-core-sdk"),
    ];
    let workflow_slots = [ours[0], ours[1], ours[2], ("worker_type", "WorkflowWorker")];
    // Slots and pollers are there once the worker runs, before any task.
    let samples = wait_for(
        "the worker's slot and poller gauges",
        Duration::from_secs(30),
        || async {
            let samples = scrape(&relay).await;
            let pollers = [ours[0], ours[1], ("poller_type", "workflow_task")];
            (value(
                &samples,
                "temporal_worker_task_slots_available",
                &workflow_slots,
            )
            .is_some_and(|v| v > 0.0)
                && value(&samples, "temporal_num_pollers", &pollers).is_some_and(|v| v >= 1.0))
            .then_some(samples)
        },
    )
    .await;
    assert!(
        value(&samples, "temporal_worker_task_slots_used", &workflow_slots).is_some(),
        "temporal_worker_task_slots_used missing"
    );

    // A row due in an hour: its workflow's first task starts the timer.
    let pg = db.connect().await;
    let id = db.insert_due_in("1 hour").await;
    db.wait_all_dispatched(Duration::from_secs(30)).await;
    let trigger_workflow = [ours[0], ours[1], ("workflow_type", "trigger_workflow")];
    wait_for(
        "the first workflow task in the metrics",
        Duration::from_secs(30),
        || async {
            let samples = scrape(&relay).await;
            value(
                &samples,
                "temporal_workflow_task_execution_latency_count",
                &trigger_workflow,
            )
            .is_some_and(|v| v >= 1.0)
            .then_some(())
        },
    )
    .await;

    // Cancelled while it waits: a second workflow task, the daemon's record_outcome
    // activity, and the workflow completes (it returns the `cancelled` outcome).
    let workflow_id: String = pg
        .query_one(
            "SELECT workflow_id FROM trigger_relay_outbox WHERE id = $1",
            &[&id],
        )
        .await
        .expect("row")
        .get(0);
    temporal_cli(&temporal, &["cancel", "--workflow-id", &workflow_id]);
    let samples = wait_for(
        "the completed workflow in the metrics",
        Duration::from_secs(60),
        || async {
            let samples = scrape(&relay).await;
            value(&samples, "temporal_workflow_completed", &trigger_workflow)
                .is_some_and(|v| v >= 1.0)
                .then_some(samples)
        },
    )
    .await;
    assert_eq!(db.state_of(id).await, "cancelled");

    let at_least = |name: &str, labels: &[(&str, &str)], min: f64| {
        let found = value(&samples, name, labels);
        assert!(
            found.is_some_and(|v| v >= min),
            "{name} {labels:?}: {found:?}, expected at least {min}\n{}",
            samples
                .iter()
                .filter(|s| s.name.starts_with("temporal_"))
                .map(|s| format!("{} {:?} {}", s.name, s.labels, s.value))
                .collect::<Vec<_>>()
                .join("\n")
        );
    };
    // Workflow tasks: the timer's and the cancellation's, in seconds.
    at_least(
        "temporal_workflow_task_schedule_to_start_latency_count",
        &ours,
        2.0,
    );
    at_least(
        "temporal_workflow_task_execution_latency_count",
        &trigger_workflow,
        2.0,
    );
    at_least(
        "temporal_workflow_task_schedule_to_start_latency_bucket",
        &[ours[1], ("le", "0.025")],
        0.0,
    );
    at_least(
        "temporal_workflow_task_execution_latency_bucket",
        &[ours[1], ("le", "0.001")],
        0.0,
    );
    // record_outcome, the daemon's own activity.
    let record = [ours[1], ("activity_type", "trigger_relay.record_outcome")];
    at_least(
        "temporal_activity_schedule_to_start_latency_count",
        &[ours[1]],
        1.0,
    );
    at_least("temporal_activity_execution_latency_count", &record, 1.0);
    // The sticky cache and the pollers.
    at_least("temporal_sticky_cache_size", &[ours[1]], 0.0);
    at_least(
        "temporal_num_pollers",
        &[ours[1], ("poller_type", "workflow_task")],
        1.0,
    );
    // The worker's client: polls and the other calls, counted by operation.
    at_least(
        "temporal_long_request",
        &[ours[0], ("operation", "PollWorkflowTaskQueue")],
        2.0,
    );
    at_least(
        "temporal_request",
        &[ours[0], ("operation", "RespondWorkflowTaskCompleted")],
        2.0,
    );
    // The client records `temporal_request` with two label sets (GetSystemInfo has no
    // namespace): both are exported, as one family.
    at_least(
        "temporal_request",
        &[("operation", "GetSystemInfo"), ours[2]],
        1.0,
    );
    at_least(
        "temporal_request_latency_count",
        &[("operation", "RespondWorkflowTaskCompleted")],
        2.0,
    );
    // Durations in seconds: a workflow task of this workflow takes well under a second
    // (in milliseconds the sum would be far above the count).
    let sum = value(
        &samples,
        "temporal_workflow_task_execution_latency_sum",
        &trigger_workflow,
    )
    .unwrap_or(f64::NAN);
    let count = value(
        &samples,
        "temporal_workflow_task_execution_latency_count",
        &trigger_workflow,
    )
    .unwrap_or(f64::NAN);
    assert!(sum / count < 1.0, "mean workflow task {sum}/{count} s");
    // Counters named as the SDK names them: no `_total` added (as the Python worker).
    assert!(
        !samples
            .iter()
            .any(|s| s.name == "temporal_workflow_completed_total"),
        "a _total suffix was added"
    );
    // The relay's own metrics are still served alongside.
    assert!(value(&samples, "trigger_relay_ready", &[]).is_some_and(|v| v == 1.0));

    drop(relay);
    db.drop_db().await;
}
