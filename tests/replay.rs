//! Versioning and replay protection (guarantees §5.2): every recorded history of a released
//! trigger_workflow replays against the current code, and a nondeterministic change is caught.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use temporalio_client::WorkflowHistory;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowResult};
use trigger_relay::histories::{self, HistoryError};
use trigger_relay::outbox::{Outcome, State, WorkflowInput};
use trigger_relay::workflow::{DjangoActivities, WorkflowSettings};

fn histories_dir() -> PathBuf {
    common::repo_root().join("tests/histories")
}

fn settings() -> WorkflowSettings {
    WorkflowSettings {
        django_task_queue: "trigger-relay-django".into(),
        perform_timeout: Duration::from_secs(300),
        perform_heartbeat_timeout: Duration::from_secs(30),
        perform_max_attempts: 10,
        record_timeout: Duration::from_secs(30),
    }
}

/// Every history of every released version (tests/histories/v*/).
fn all_histories() -> Vec<(String, WorkflowHistory)> {
    let mut all = Vec::new();
    let mut versions: Vec<_> = std::fs::read_dir(histories_dir())
        .expect("tests/histories")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    versions.sort();
    for dir in versions {
        all.extend(histories::load_dir(&dir).expect("load histories"));
    }
    all
}

#[tokio::test]
async fn recorded_histories_replay_against_the_current_workflow() {
    let histories = all_histories();
    // done, done after a delay, replayed with nothing to perform, failed, cancelled, skipped
    assert!(
        histories.len() >= 6,
        "only {} recorded histories",
        histories.len()
    );
    let replayer = histories::replayer(settings()).expect("replayer");
    let mut report = Vec::new();
    let replayed = histories::replay_all(&replayer, histories, &mut report).await;
    let report = String::from_utf8_lossy(&report);
    assert!(replayed.is_ok(), "{replayed:?}\n{report}");
    assert!(!report.contains("FAIL"), "{report}");
}

/// A deliberate nondeterministic change: the same workflow type that now waits on a timer
/// before performing and on another one after, as a careless edit would, without
/// `ctx.patched`. (The timer before alone matches a history with a delay, now that a
/// delayed firing is a timer and perform_firing with nothing in between: timer durations
/// are not compared on replay.)
#[workflow]
#[derive(Default)]
struct CarelessTriggerWorkflow;

#[workflow_methods]
impl CarelessTriggerWorkflow {
    #[run(name = "trigger_workflow")]
    async fn run(ctx: &mut WorkflowContext<Self>, input: WorkflowInput) -> WorkflowResult<Outcome> {
        ctx.timer(Duration::from_secs(1)).await;
        let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
            .task_queue("trigger-relay-django".to_owned())
            .build();
        let firing = ctx
            .execute_activity(DjangoActivities::perform_firing, input.clone(), options)
            .await?;
        ctx.timer(Duration::from_secs(1)).await;
        Ok(Outcome {
            outbox_id: input.outbox_id,
            generation: input.generation,
            firing_uuid: input.firing_uuid.clone(),
            state: firing.outcome.parse().unwrap_or(State::Failed),
            reason: firing.reason,
            error: None,
            performed: firing.performed,
            site: input.site,
        })
    }
}

#[tokio::test]
async fn a_nondeterministic_change_is_caught() {
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<CarelessTriggerWorkflow>()
        .expect("register")
        .build();
    let replayer = WorkflowReplayer::new(options).expect("replayer");
    let histories = all_histories();
    let total = histories.len();
    let mut report = Vec::new();
    let result = histories::replay_all(&replayer, histories, &mut report).await;
    let report = String::from_utf8_lossy(&report);
    match result {
        Err(HistoryError::Nondeterministic { failed, total: t }) => {
            assert_eq!(t, total);
            // Every history that got past the start differs from the careless code.
            assert_eq!(failed, total, "{report}");
        }
        other => panic!("the careless change was not caught: {other:?}\n{report}"),
    }
    assert!(
        report.contains("onondeterminis") || report.contains("Nondeterminism"),
        "{report}"
    );
}

/// The deploy gate: `trigger-relay replay-histories` exits 0 on good histories and non-zero,
/// naming the history, on one the code cannot replay.
#[test]
fn replay_histories_cli_is_a_deploy_gate() {
    let good = common::relay_cli_env(&[
        "replay-histories",
        "--dir",
        histories_dir().join("v1").to_str().expect("path"),
    ]);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let out = String::from_utf8_lossy(&good.stdout);
    assert!(
        out.contains("histories replayed, all deterministic"),
        "{out}"
    );

    // A gate that replayed nothing proved nothing: an empty directory fails it.
    let empty = std::env::temp_dir().join(format!("trigger-relay-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("temp dir");
    let nothing =
        common::relay_cli_env(&["replay-histories", "--dir", empty.to_str().expect("path")]);
    let _ = std::fs::remove_dir_all(&empty);
    assert!(
        !nothing.status.success(),
        "zero histories must not pass the gate"
    );
    assert!(
        String::from_utf8_lossy(&nothing.stderr).contains("nothing to replay"),
        "{}",
        String::from_utf8_lossy(&nothing.stderr)
    );

    // A history whose recorded activity type is not what the code schedules.
    let tampered =
        std::env::temp_dir().join(format!("trigger-relay-tampered-{}", std::process::id()));
    std::fs::create_dir_all(&tampered).expect("temp dir");
    let original =
        std::fs::read_to_string(histories_dir().join("v1/done_no_delay.json")).expect("history");
    let changed = original.replace(
        "trigger_relay.perform_firing",
        "trigger_relay.perform_firing_v0",
    );
    assert_ne!(original, changed, "the fixture names the activity type");
    std::fs::write(tampered.join("tampered.json"), changed).expect("write");
    let bad = common::relay_cli_env(&[
        "replay-histories",
        "--dir",
        tampered.to_str().expect("path"),
    ]);
    let _ = std::fs::remove_dir_all(&tampered);
    assert!(
        !bad.status.success(),
        "a nondeterministic history must fail the gate"
    );
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(
        out.contains("FAIL") && out.contains("tampered.json"),
        "{out}"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nondeterminism"));
}

/// The perform_firing heartbeat timeout (guarantees §3.6) was patched in: histories of v2 (and
/// v3) carry the patch marker and a scheduled perform with the heartbeat timeout, those of v1
/// neither. From v4 on the patch is retired (docs/versioning.md): the timeout without the
/// marker, 2 history events fewer. All sets replay (above): a replaying workflow task still
/// asks for the marker where a history has it. A folder recorded with the wrong code fails
/// here.
#[test]
fn heartbeat_timeout_is_recorded_behind_its_patch_until_v4() {
    let patched = |dir: &str| -> Vec<(bool, String)> {
        let mut files: Vec<_> = std::fs::read_dir(histories_dir().join(dir))
            .expect("history folder")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).expect("history file");
                let history: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                let events = history["events"].as_array().expect("events").clone();
                let marker = events.iter().any(|event| {
                    event["attributes"]["MarkerRecordedEventAttributes"]["marker_name"]
                        == "core_patch"
                });
                let heartbeat = events
                    .iter()
                    .map(|event| &event["attributes"]["ActivityTaskScheduledEventAttributes"])
                    .find(|scheduled| {
                        scheduled["activity_type"]["name"] == "trigger_relay.perform_firing"
                    })
                    .map(|scheduled| scheduled["heartbeat_timeout"].clone());
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                match heartbeat {
                    // Cancelled during the delay: perform was never scheduled.
                    None => (marker, format!("{name}: no perform")),
                    Some(timeout) => (marker, format!("{name}: heartbeat {timeout}")),
                }
            })
            .collect()
    };
    let v1 = patched("v1");
    let v2 = patched("v2");
    assert!(v1.iter().all(|(marker, _)| !marker), "{v1:?}");
    assert!(
        v1.iter()
            .all(|(_, what)| what.ends_with("no perform") || what.ends_with("\"0.000000000s\"")),
        "{v1:?}"
    );
    let performed: Vec<_> = v2
        .iter()
        .filter(|(_, what)| !what.ends_with("no perform"))
        .collect();
    assert!(performed.len() >= 4, "{v2:?}");
    assert!(
        performed
            .iter()
            .all(|(marker, what)| *marker && what.ends_with("\"30.000000000s\"")),
        "{v2:?}"
    );
    let v4 = patched("v4");
    let performed: Vec<_> = v4
        .iter()
        .filter(|(_, what)| !what.ends_with("no perform"))
        .collect();
    assert!(performed.len() >= 4, "{v4:?}");
    assert!(v4.iter().all(|(marker, _)| !marker), "{v4:?}");
    assert!(
        performed
            .iter()
            .all(|(_, what)| what.ends_with("\"30.000000000s\"")),
        "{v4:?}"
    );
}

/// Fewer events (docs/performance.md, goal 1): a firing without delay is 11 history events from
/// v4 on (13 in v3, 19 in v2): started, the workflow task that schedules perform_firing, its
/// three events, the workflow task that completes, completed.
#[test]
fn a_firing_without_delay_is_eleven_events_from_v4_on() {
    let count = |dir: &str| -> usize {
        let path = histories_dir().join(dir).join("done_no_delay.json");
        let text = std::fs::read_to_string(&path).expect("history file");
        let history: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        history["events"].as_array().expect("events").len()
    };
    assert_eq!([count("v2"), count("v3"), count("v4")], [19, 13, 11]);
}

/// From v3 on (docs/versioning.md), perform_firing records `done` and `skipped` itself, in the
/// firing's transaction, and the workflow schedules no record_outcome for them; a failure and a
/// cancellation are still recorded by the daemon. v2 histories (the daemon recorded every
/// outcome) keep replaying through the other branch (above).
#[test]
fn outcomes_recorded_by_perform_from_v3_on() {
    let activities = |dir: &str, name: &str| -> Vec<String> {
        let path = histories_dir().join(dir).join(name);
        let text = std::fs::read_to_string(&path).expect("history file");
        let history: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        history["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|event| {
                event["attributes"]["ActivityTaskScheduledEventAttributes"]["activity_type"]["name"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    };
    const PERFORM: &str = "trigger_relay.perform_firing";
    const RECORD: &str = "trigger_relay.record_outcome";
    for name in [
        "done_no_delay.json",
        "done_after_delay.json",
        "skipped_trigger_disabled.json",
        "replayed_nothing_to_perform.json",
    ] {
        assert_eq!(activities("v4", name), [PERFORM], "v4/{name}");
        assert_eq!(activities("v3", name), [PERFORM], "v3/{name}");
        assert_eq!(activities("v2", name), [PERFORM, RECORD], "v2/{name}");
    }
    assert_eq!(
        activities("v3", "failed_activity_error.json"),
        [PERFORM, RECORD]
    );
    assert_eq!(activities("v3", "cancelled_during_delay.json"), [RECORD]);
}
