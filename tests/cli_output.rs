//! What the operator commands print and pick, through the real binary on a real database:
//! values from the database or from Temporal reach the terminal escaped (README, "The
//! command line"), `replay` leaves rows finished on purpose alone unless `--state` names
//! them, and secrets come from files or the environment, with a warning for a secret flag.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{RelayProcess, TemporalServer, TestDb, output_within, relay_bin, relay_cli};

/// Erases the screen, retitles the window and rings the bell, as stored in a row.
const HOSTILE_ERROR: &str = "\u{1b}[2J\u{1b}]0;pwned\u{7} and a CSI \u{9b}31m, DEL \u{7f}";
/// How the text output shows it.
const HOSTILE_ERROR_ESCAPED: &str =
    "\\u{1b}[2J\\u{1b}]0;pwned\\u{7} and a CSI \\u{9b}31m, DEL \\u{7f}";
const HOSTILE_USER: &str = "u\u{1b}[31mred\nline";
const HOSTILE_USER_ESCAPED: &str = "u\\u{1b}[31mred\\u{a}line";

/// The bytes no output may carry raw: C0 controls but the newlines between lines, DEL, and
/// C1 controls (in UTF-8, 0xC2 0x80..0x9F).
fn raw_controls(output: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(output);
    text.chars()
        .filter(|c| c.is_control() && *c != '\n')
        .map(|c| format!("U+{:04X}", u32::from(c)))
        .collect()
}

fn stdout_of(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Inserts one row in `state` of trigger `trigger`, with the hostile user and error, and
/// a workflow id holding an escape too.
async fn insert(db: &TestDb, state: &str, trigger: i64) -> i64 {
    let client = db.connect().await;
    let skip_reason = (state == "skipped").then_some("condition_false");
    let finished = !matches!(state, "pending" | "dispatched");
    client
        .query_one(
            "INSERT INTO trigger_relay_outbox
                 (event_id, trigger_id, user_pk, due_at, state, skip_reason, last_error,
                  finished_at, workflow_id)
             VALUES (1, $1, $2, now(), $3, $4, $5,
                     CASE WHEN $6 THEN now() END,
                     CASE WHEN $3 <> 'pending' THEN 'wf-' || $3 || E'\\x1b[8m' END)
             RETURNING id",
            &[
                &trigger,
                &HOSTILE_USER,
                &state,
                &skip_reason,
                &(state == "failed").then_some(HOSTILE_ERROR),
                &finished,
            ],
        )
        .await
        .expect("insert row")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_replay_and_cancel_print_stored_values_escaped() {
    let db = TestDb::create().await;
    let failed = insert(&db, "failed", 1).await;
    let pending = insert(&db, "pending", 1).await;

    let status = stdout_of(&relay_cli(&db.url, &["status"]));
    assert_eq!(
        raw_controls(status.as_bytes()),
        Vec::<String>::new(),
        "{status}"
    );
    assert!(status.contains(HOSTILE_ERROR_ESCAPED), "{status}");
    assert!(status.contains(HOSTILE_USER_ESCAPED), "{status}");

    // JSON: every control a \u escape, C1 and DEL too (serde_json writes those raw), and
    // the document still says exactly what is stored.
    let json = relay_cli(&db.url, &["status", "--json"]);
    assert_eq!(raw_controls(&json.stdout), Vec::<String>::new());
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status JSON");
    assert_eq!(doc["recent_failures"][0]["last_error"], HOSTILE_ERROR);
    assert_eq!(doc["recent_failures"][0]["user_pk"], HOSTILE_USER);

    let replay = stdout_of(&relay_cli(
        &db.url,
        &["replay", "--id", &failed.to_string(), "--dry-run"],
    ));
    assert_eq!(
        raw_controls(replay.as_bytes()),
        Vec::<String>::new(),
        "{replay}"
    );
    assert!(replay.contains("would replay 1 row(s)"), "{replay}");
    assert!(replay.contains(HOSTILE_USER_ESCAPED), "{replay}");
    assert!(replay.contains("wf-failed\\u{1b}[8m"), "{replay}");
    let replay_json = relay_cli(
        &db.url,
        &["replay", "--id", &failed.to_string(), "--dry-run", "--json"],
    );
    assert_eq!(raw_controls(&replay_json.stdout), Vec::<String>::new());

    // A pending row needs no Temporal to be cancelled.
    let cancel = stdout_of(&relay_cli(
        &db.url,
        &["cancel", "--id", &pending.to_string(), "--dry-run"],
    ));
    assert_eq!(
        raw_controls(cancel.as_bytes()),
        Vec::<String>::new(),
        "{cancel}"
    );
    assert!(cancel.contains(HOSTILE_USER_ESCAPED), "{cancel}");
    let cancel_json = relay_cli(
        &db.url,
        &[
            "cancel",
            "--id",
            &pending.to_string(),
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(raw_controls(&cancel_json.stdout), Vec::<String>::new());
    db.drop_db().await;
}

/// The ids `replay --dry-run --json` with `args` would replay.
fn would_replay(db: &TestDb, args: &[&str]) -> Vec<i64> {
    let mut all = vec!["replay", "--dry-run", "--json"];
    all.extend_from_slice(args);
    let out = relay_cli(&db.url, &all);
    let doc: serde_json::Value = serde_json::from_str(&stdout_of(&out)).expect("replay JSON");
    let mut ids: Vec<i64> = doc["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_without_state_leaves_rows_finished_on_purpose_alone() {
    let db = TestDb::create().await;
    let trigger = 77;
    let failed = insert(&db, "failed", trigger).await;
    let done = insert(&db, "done", trigger).await;
    let skipped = insert(&db, "skipped", trigger).await;
    let cancelled = insert(&db, "cancelled", trigger).await;
    let dispatched = insert(&db, "dispatched", trigger).await;
    let t = trigger.to_string();
    let range = format!("{failed}..{dispatched}");

    // Broad selectors: failed rows only.
    assert_eq!(would_replay(&db, &["--trigger", &t]), vec![failed]);
    assert_eq!(would_replay(&db, &["--id-range", &range]), vec![failed]);
    assert_eq!(
        would_replay(&db, &["--created-after", "2000-01-01T00:00:00Z"]),
        vec![failed]
    );
    // --include-dispatched still adds the dispatched rows it always asked for.
    assert_eq!(
        would_replay(&db, &["--trigger", &t, "--include-dispatched"]),
        vec![failed, dispatched]
    );
    // --state names exactly what it picks.
    assert_eq!(
        would_replay(&db, &["--trigger", &t, "--state", "cancelled"]),
        vec![cancelled]
    );
    assert_eq!(
        would_replay(&db, &["--trigger", &t, "--state", "skipped,done"]),
        vec![done, skipped]
    );
    // --id: a failed or done row named is a deliberate re-run; a cancelled or skipped one
    // needs its --state as well.
    let ids = [failed, done, skipped, cancelled]
        .map(|id| id.to_string())
        .join(",");
    assert_eq!(would_replay(&db, &["--id", &ids]), vec![failed, done]);

    let refused = stdout_of(&relay_cli(
        &db.url,
        &["replay", "--id", &cancelled.to_string()],
    ));
    assert!(refused.contains("replayed 0 row(s)"), "{refused}");
    assert!(
        refused.contains(&format!(
            "row {cancelled} is cancelled (finished on purpose) and was left alone; \
             add --state cancelled to replay it"
        )),
        "{refused}"
    );
    assert_eq!(db.state_of(cancelled).await, "cancelled");
    let left = relay_cli(&db.url, &["replay", "--id", &skipped.to_string(), "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout_of(&left)).expect("replay JSON");
    assert_eq!(
        doc["left_alone"],
        serde_json::json!([{"id": skipped, "state": "skipped"}])
    );
    assert_eq!(db.state_of(skipped).await, "skipped");

    let named = stdout_of(&relay_cli(
        &db.url,
        &[
            "replay",
            "--id",
            &cancelled.to_string(),
            "--state",
            "cancelled",
        ],
    ));
    assert!(named.contains("replayed 1 row(s)"), "{named}");
    assert_eq!(db.state_of(cancelled).await, "pending");
    db.drop_db().await;
}

fn temp_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "trigger-relay-{kind}-{}-{}",
        std::process::id(),
        common::free_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `trigger-relay status` with exactly `env` (nothing inherited but PATH).
fn status_with(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(relay_bin());
    cmd.arg("status")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TRIGGER_RELAY_LOG_FORMAT", "text");
    for (k, v) in env {
        cmd.env(k, v);
    }
    output_within(cmd, Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_come_from_files_and_a_secret_flag_is_warned_about() {
    let db = TestDb::create().await;
    let dir = temp_dir("secrets");
    // What `systemd-creds`, `echo` or a Kubernetes secret volume leaves: a trailing newline.
    let url_file = dir.join("database-url");
    std::fs::write(&url_file, format!("{}\n", db.url)).expect("write secret");
    let url_file = url_file.to_str().expect("path");

    let from_file = status_with(&[("TRIGGER_RELAY_DATABASE_URL_FILE", url_file)], &[]);
    assert!(stdout_of(&from_file).contains("backlog (pending rows): 0"));
    assert!(
        !String::from_utf8_lossy(&from_file.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );

    let both = status_with(
        &[
            ("TRIGGER_RELAY_DATABASE_URL_FILE", url_file),
            ("TRIGGER_RELAY_DATABASE_URL", &db.url),
        ],
        &[],
    );
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("both set"));

    let missing = status_with(
        &[(
            "TRIGGER_RELAY_DATABASE_URL_FILE",
            "/nonexistent/database-url",
        )],
        &[],
    );
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("TRIGGER_RELAY_DATABASE_URL_FILE=/nonexistent/database-url"),
        "{stderr}"
    );

    // A password on the command line (trust authentication ignores it): it works, with a
    // warning that says how to keep it out of `ps`, and never echoes it.
    let with_password = db.url.replace("@127.0.0.1", ":flag-s3cret@127.0.0.1");
    assert_ne!(with_password, db.url);
    let flagged = status_with(&[], &["--database-url", &with_password]);
    stdout_of(&flagged);
    let stderr = String::from_utf8_lossy(&flagged.stderr);
    assert!(
        stderr.contains("warning: --database-url puts a secret on the command line")
            && stderr.contains("TRIGGER_RELAY_DATABASE_URL_FILE"),
        "{stderr}"
    );
    assert!(!stderr.contains("flag-s3cret"), "{stderr}");
    // No password, no secret, no warning.
    let plain = status_with(&[], &["--database-url", &db.url]);
    stdout_of(&plain);
    assert!(
        !String::from_utf8_lossy(&plain.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );

    let _ = std::fs::remove_dir_all(&dir);
    db.drop_db().await;
}

/// Every file under `dir`, recursively, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                found.push(
                    path.strip_prefix(dir)
                        .expect("under dir")
                        .display()
                        .to_string(),
                );
            }
        }
    }
    found
}

/// Workflow ids are chosen by whoever starts a workflow: `replay-histories --save-dir`
/// names files after them, so `../` and escapes must neither leave the directory nor reach
/// the terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_histories_saves_hostile_workflow_ids_inside_the_directory() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    // The daemon's workflow ids start with the prefix: `../` and an escape.
    let prefix = "../../hostile\u{1b}[2J";
    let relay = RelayProcess::spawn(
        &db.url,
        &temporal.address(),
        &[("TRIGGER_RELAY_WORKFLOW_ID_PREFIX", prefix)],
    );
    let ids = db.insert_rows(1).await;
    db.wait_all_dispatched(Duration::from_secs(60)).await;
    let client = temporal.client().await;
    let workflow_id: String = db
        .connect()
        .await
        .query_one(
            "SELECT workflow_id FROM trigger_relay_outbox WHERE id = $1",
            &[&ids[0]],
        )
        .await
        .expect("workflow id")
        .get(0);
    assert!(workflow_id.starts_with(prefix), "{workflow_id:?}");
    common::wait_for(
        "the workflow to be listed",
        Duration::from_secs(30),
        || async {
            let ids = common::workflow_ids(&client).await;
            ids.contains(&workflow_id).then_some(())
        },
    )
    .await;
    drop(relay);

    let root = temp_dir("save-dir");
    let save_dir = root.join("a/b");
    let mut cmd = Command::new(relay_bin());
    cmd.args(["replay-histories", "--save-dir"])
        .arg(&save_dir)
        .env("TRIGGER_RELAY_TEMPORAL_ADDRESS", temporal.address())
        .env("TRIGGER_RELAY_LOG_FORMAT", "text")
        .env("TRIGGER_RELAY_LOG", "warn");
    let out = output_within(cmd, Duration::from_secs(120));
    let stdout = stdout_of(&out);
    assert_eq!(
        raw_controls(stdout.as_bytes()),
        Vec::<String>::new(),
        "{stdout}"
    );
    assert!(stdout.contains("../../hostile\\u{1b}[2J"), "{stdout}");

    let everywhere = files_under(&root);
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(everywhere.len(), 1, "{everywhere:?}");
    let saved = &everywhere[0];
    let name = saved.strip_prefix("a/b/").expect("in the save directory");
    assert!(
        name.starts_with("_._.__hostile__2J-") && name.ends_with(".json"),
        "{name}"
    );
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "{name}"
    );
    db.drop_db().await;
}
