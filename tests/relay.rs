//! The relay end to end: real PostgreSQL, a real Temporal dev server, real daemon processes
//! and real signals. Each test owns its database and its dev server.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;

fn assert_unique(ids: &[String]) -> HashSet<String> {
    let set: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "a workflow id was started twice");
    set
}

/// guarantees §4.2, §4.3: 1,000 rows while three replicas run: 1,000 starts, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_start_each_of_1000_rows_exactly_once() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let relays: Vec<_> = (0..3)
        .map(|i| {
            RelayProcess::spawn(
                &db.url,
                &temporal.address(),
                &[
                    ("TRIGGER_RELAY_REPLICA", &format!("replica-{i}")),
                    ("TRIGGER_RELAY_BATCH_SIZE", "50"),
                    ("TRIGGER_RELAY_POLL_INTERVAL", "1s"),
                ],
            )
        })
        .collect();
    for relay in &relays {
        relay.wait_ready().await;
    }
    // Rows arrive while the replicas run: 20 transactions of 50.
    for _ in 0..20 {
        db.insert_rows(50).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.wait_all_dispatched(Duration::from_secs(120)).await;
    assert_eq!(db.count("dispatched").await, 1000);

    let client = temporal.client().await;
    let ids = wait_workflow_ids(&client, 1000, Duration::from_secs(60)).await;
    assert_eq!(
        ids.len(),
        1000,
        "Temporal has {} trigger workflows",
        ids.len()
    );
    let set = assert_unique(&ids);

    // Each row's recorded workflow id is one Temporal has, and no two rows share one.
    let pg = db.connect().await;
    let recorded: Vec<String> = pg
        .query("SELECT workflow_id FROM trigger_relay_outbox", &[])
        .await
        .expect("workflow ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(recorded.iter().collect::<HashSet<_>>().len(), 1000);
    assert!(recorded.iter().all(|id| set.contains(id)));

    // All three replicas took part (claims are spread by SKIP LOCKED, not serialized).
    let claimers: Vec<String> = pg
        .query(
            "SELECT DISTINCT claimed_by FROM trigger_relay_outbox WHERE claimed_by IS NOT NULL",
            &[],
        )
        .await
        .expect("claimers")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        claimers.is_empty(),
        "dispatched rows keep no claim: {claimers:?}"
    );
    let mut started = 0.0;
    for relay in &relays {
        started += relay
            .metric("trigger_relay_workflows_started_total{result=\"started\"}")
            .await;
    }
    assert_eq!(started, 1000.0, "new starts across the replicas");
    drop(relays);
    db.drop_db().await;
}

/// guarantees §4.1: NOTIFY wakes the relay long before the poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_the_relay_before_the_poll() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let relay = RelayProcess::spawn(
        &db.url,
        &temporal.address(),
        &[("TRIGGER_RELAY_POLL_INTERVAL", "1h")],
    );
    relay.wait_ready().await;
    relay.wait_listening().await;
    let ids = db.insert_rows(1).await;
    wait_for(
        "the notified row to be dispatched",
        Duration::from_secs(30),
        || async { (db.state_of(ids[0]).await == "dispatched").then_some(()) },
    )
    .await;
    assert_eq!(
        relay
            .metric("trigger_relay_rows_claimed_total{source=\"notify\"}")
            .await,
        1.0
    );
    assert_eq!(
        relay
            .metric("trigger_relay_rows_claimed_total{source=\"poll\"}")
            .await,
        0.0
    );
    // The look-up 100 ms after the notification is counted apart, not as a second one.
    wait_for(
        "the settle look-up after the notification",
        Duration::from_secs(10),
        || async {
            (relay
                .metric("trigger_relay_wakeups_total{source=\"settle\"}")
                .await
                >= 1.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        relay
            .metric("trigger_relay_wakeups_total{source=\"notify\"}")
            .await,
        1.0
    );
    db.drop_db().await;
}

/// guarantees §4.1: with NOTIFY off, the listener killed, or LISTEN disabled, rows still start by
/// polling, within the poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_carries_rows_without_notifications() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let poll = Duration::from_secs(2);
    let relay = RelayProcess::spawn(
        &db.url,
        &temporal.address(),
        &[("TRIGGER_RELAY_POLL_INTERVAL", "2s")],
    );
    relay.wait_ready().await;
    relay.wait_listening().await;
    let pg = db.connect().await;

    // 1. NOTIFY turned off in the inserting session.
    pg.batch_execute(
        "SET trigger_relay.notify = off;
         INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, due_at)
         VALUES (1, 1, 'quiet', now());",
    )
    .await
    .expect("insert without notify");
    let quiet: i64 = pg
        .query_one(
            "SELECT id FROM trigger_relay_outbox WHERE user_pk = 'quiet'",
            &[],
        )
        .await
        .expect("row")
        .get(0);
    let since = Instant::now();
    wait_for("the silent row to be polled", poll * 3, || async {
        (db.state_of(quiet).await == "dispatched").then_some(())
    })
    .await;
    eprintln!(
        "silent row dispatched {:?} after commit (poll interval {poll:?})",
        since.elapsed()
    );
    assert!(
        relay
            .metric("trigger_relay_rows_claimed_total{source=\"poll\"}")
            .await
            >= 1.0
    );
    assert_eq!(
        relay
            .metric("trigger_relay_rows_claimed_total{source=\"notify\"}")
            .await,
        0.0
    );

    // 2. The listening connection killed by the server.
    wait_for("the LISTEN connection", Duration::from_secs(10), || async {
        (relay.metric("trigger_relay_listener_connected").await == 1.0).then_some(())
    })
    .await;
    let killed: i64 = pg
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            &[],
        )
        .await
        .expect("terminate listener")
        .get(0);
    assert_eq!(killed, 1, "exactly one LISTEN connection to kill");
    let ids = db.insert_rows(3).await;
    wait_for("rows after the listener died", poll * 3, || async {
        let mut all = true;
        for id in &ids {
            all &= db.state_of(*id).await == "dispatched";
        }
        all.then_some(())
    })
    .await;
    // The listener comes back by itself and wakes the relay at once.
    wait_for(
        "the LISTEN connection to come back",
        Duration::from_secs(15),
        || async { (relay.metric("trigger_relay_listener_connected").await == 1.0).then_some(()) },
    )
    .await;
    assert!(
        relay
            .metric("trigger_relay_wakeups_total{source=\"reconnect\"}")
            .await
            >= 2.0
    );
    drop(relay);

    // 3. Poll-only mode (PgBouncer in transaction mode): no LISTEN connection at all.
    let relay = RelayProcess::spawn(
        &db.url,
        &temporal.address(),
        &[
            ("TRIGGER_RELAY_POLL_INTERVAL", "2s"),
            ("TRIGGER_RELAY_LISTEN", "false"),
        ],
    );
    relay.wait_ready().await;
    let ids = db.insert_rows(5).await;
    wait_for("rows in poll-only mode", poll * 3, || async {
        let mut all = true;
        for id in &ids {
            all &= db.state_of(*id).await == "dispatched";
        }
        all.then_some(())
    })
    .await;
    let listeners: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            &[],
        )
        .await
        .expect("listeners")
        .get(0);
    assert_eq!(listeners, 0, "poll-only mode must not LISTEN");
    assert_eq!(relay.metric("trigger_relay_listener_connected").await, 0.0);
    db.drop_db().await;
}

/// guarantees §4.4: Temporal down for 20 s while rows arrive: not ready meanwhile, nothing lost,
/// everything started once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_outage_loses_nothing() {
    let db = TestDb::create().await;
    let mut temporal = TemporalServer::start_persistent().await;
    let relay = RelayProcess::spawn(
        &db.url,
        &temporal.address(),
        &[
            ("TRIGGER_RELAY_POLL_INTERVAL", "1s"),
            ("TRIGGER_RELAY_STATS_INTERVAL", "1s"),
            ("TRIGGER_RELAY_BACKOFF_MAX", "2s"),
        ],
    );
    relay.wait_ready().await;
    db.insert_rows(10).await;
    db.wait_all_dispatched(Duration::from_secs(30)).await;

    temporal.stop();
    let outage = Instant::now();
    wait_for("/readyz to turn false", Duration::from_secs(15), || async {
        (relay.ready().await == Some(false)).then_some(())
    })
    .await;
    let mut inserted = 0;
    while outage.elapsed() < Duration::from_secs(20) {
        db.insert_rows(5).await;
        inserted += 5;
        // 503, not a refused connection: the daemon stays up through the outage.
        let readyz = relay.get("/readyz").await;
        assert!(
            matches!(&readyz, Some((503, _))),
            "ready, or not serving, while Temporal is down: {readyz:?}"
        );
        let (_, healthz) = relay
            .get("/healthz")
            .await
            .expect("alive during the outage");
        assert_eq!(healthz.trim(), "ok");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(
        db.count("pending").await,
        inserted,
        "rows stay pending during the outage"
    );
    assert_eq!(db.count("failed").await, 0, "an outage fails no row");

    temporal.restart().await;
    relay.wait_ready().await;
    db.wait_all_dispatched(Duration::from_secs(60)).await;
    let total = 10 + inserted as usize;
    assert_eq!(db.count("dispatched").await as usize, total);
    let ids = wait_workflow_ids(&temporal.client().await, total, Duration::from_secs(60)).await;
    assert_eq!(ids.len(), total);
    assert_unique(&ids);
    assert!(
        relay
            .metric("trigger_relay_temporal_errors_total{operation=\"start_workflow\"}")
            .await
            + relay
                .metric("trigger_relay_temporal_errors_total{operation=\"describe_namespace\"}")
                .await
            >= 1.0
    );
    db.drop_db().await;
}

/// guarantees §4.2: a relay killed with SIGKILL mid-batch and restarted: nothing lost, nothing
/// doubled; its claims come back after the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_loses_and_doubles_nothing() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let env = [
        ("TRIGGER_RELAY_LEASE", "3s"),
        ("TRIGGER_RELAY_POLL_INTERVAL", "1s"),
        ("TRIGGER_RELAY_BATCH_SIZE", "100"),
        ("TRIGGER_RELAY_MAX_IN_FLIGHT", "4"),
    ];
    db.insert_rows(400).await;
    let mut relay = RelayProcess::spawn(&db.url, &temporal.address(), &env);
    let pg = db.connect().await;
    // Mid-way *and* mid-batch, seen in one statement: a batch's rows are marked dispatched
    // together at its end and the next claim follows at once, so "some rows dispatched"
    // alone can be seen between two batches (or, on a fast machine, after the last one).
    wait_for(
        "the relay to be mid-way, with a batch claimed",
        Duration::from_secs(60),
        || async {
            let row = pg
                .query_one(
                    "SELECT count(*) FILTER (WHERE state = 'dispatched'),
                            count(*) FILTER (WHERE state = 'pending' AND claimed_by IS NOT NULL)
                     FROM trigger_relay_outbox",
                    &[],
                )
                .await
                .expect("progress");
            let (dispatched, claimed): (i64, i64) = (row.get(0), row.get(1));
            (dispatched >= 30 && claimed > 0).then_some(())
        },
    )
    .await;
    relay.sigkill();
    let left_claimed: i64 = pg
        .query_one(
            "SELECT count(*) FROM trigger_relay_outbox WHERE state = 'pending' AND claimed_by IS NOT NULL",
            &[],
        )
        .await
        .expect("claimed")
        .get(0);
    assert!(
        left_claimed > 0,
        "the kill should land mid-batch, with rows still claimed"
    );
    let dispatched_at_kill = db.count("dispatched").await;
    assert!(
        dispatched_at_kill < 400,
        "the kill came too late to test anything"
    );

    let relay = RelayProcess::spawn(&db.url, &temporal.address(), &env);
    db.wait_all_dispatched(Duration::from_secs(120)).await;
    assert_eq!(db.count("dispatched").await, 400);
    let ids = wait_workflow_ids(&temporal.client().await, 400, Duration::from_secs(60)).await;
    assert_eq!(ids.len(), 400, "every row started exactly once");
    assert_unique(&ids);
    drop(relay);
    db.drop_db().await;
}

/// guarantees §4.5: rows that can never start are failed alone, each with a reason naming the
/// problem, while 100 rows behind them start without the relay backing off; a number
/// beyond f64 is carried exactly, not treated as poison (guarantees §2.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_rows_fail_without_blocking_others() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let pg = db.connect().await;
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    // Relay-side checks (empty user pk, a context 200 levels deep, an infinite due time,
    // which made `Row::get` panic before) and Temporal's own refusal (a 3 MB input, over the
    // server's 2 MB blob limit, with the relay's own limit raised so the server decides).
    pg.batch_execute(&format!(
        "INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, due_at)
         VALUES (1, 1, '', now());
         INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, context, due_at)
         VALUES (1, 1, 'deep', '{{\"n\": {deep}}}', now());
         INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, due_at)
         VALUES (1, 1, 'infinity', 'infinity');
         INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, context, due_at)
         VALUES (1, 1, 'big', jsonb_build_object('blob', repeat('x', 3000000)), now());
         INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, context, due_at)
         VALUES (1, 1, 'huge-number', '{{\"n\": 1e400, \"m\": 1180591620717411303424}}', now());"
    ))
    .await
    .expect("insert poison rows");
    let good = db.insert_rows(100).await;
    let relay = RelayProcess::spawn(
        &db.url,
        &temporal.address(),
        &[
            ("TRIGGER_RELAY_MAX_INPUT_BYTES", "4000000"),
            ("TRIGGER_RELAY_BATCH_SIZE", "10"),
        ],
    );
    db.wait_all_dispatched(Duration::from_secs(60)).await;
    for id in good {
        assert_eq!(db.state_of(id).await, "dispatched");
    }
    let failed: Vec<(String, String)> = pg
        .query(
            "SELECT user_pk, last_error FROM trigger_relay_outbox WHERE state = 'failed' ORDER BY id",
            &[],
        )
        .await
        .expect("failed rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(failed.len(), 4, "{failed:?}");
    assert!(failed[0].1.contains("user_pk is empty"), "{failed:?}");
    assert!(
        failed[1]
            .1
            .contains("column context nests deeper than 64 levels"),
        "{failed:?}"
    );
    assert!(failed[2].1.contains("column due_at"), "{failed:?}");
    assert!(failed[3].1.contains("rejected by Temporal"), "{failed:?}");
    assert_eq!(
        relay
            .metric("trigger_relay_rows_failed_total{reason=\"bad_payload\"}")
            .await,
        3.0
    );
    assert_eq!(
        relay
            .metric("trigger_relay_rows_failed_total{reason=\"rejected\"}")
            .await,
        1.0
    );
    // The refused row was the row's own fault: no start error, so no backoff, for the rest.
    assert_eq!(
        relay
            .metric("trigger_relay_temporal_errors_total{operation=\"start_workflow\"}")
            .await,
        0.0
    );
    // The number beyond f64 and the one beyond 64 bits reach Temporal exactly as stored.
    let huge_workflow: String = pg
        .query_one(
            "SELECT workflow_id FROM trigger_relay_outbox WHERE user_pk = 'huge-number'",
            &[],
        )
        .await
        .expect("huge-number row")
        .get(0);
    let input = workflow_input_json(&temporal, &huge_workflow).await;
    assert!(input.contains(&format!("1{}", "0".repeat(400))), "{input}");
    assert!(input.contains("1180591620717411303424"), "{input}");
    let status = relay_cli(&db.url, &["status", "--json"]);
    assert!(status.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(doc["failed"], 4);
    assert_eq!(doc["backlog"], 0);
    assert_eq!(doc["recent_failures"].as_array().map(Vec::len), Some(4));
    // The daemon never died on them.
    assert_eq!(relay.ready().await, Some(true));
    db.drop_db().await;
}

/// guarantees §4.5: a configuration Temporal would refuse for every row is refused at start,
/// naming the variable, instead of failing rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfiguration_is_refused_at_start() {
    for (variable, value, expected) in [
        (
            "TRIGGER_RELAY_TEMPORAL_TASK_QUEUE",
            "",
            "TRIGGER_RELAY_TEMPORAL_TASK_QUEUE must not be empty",
        ),
        (
            "TRIGGER_RELAY_DJANGO_TASK_QUEUE",
            " ",
            "TRIGGER_RELAY_DJANGO_TASK_QUEUE must not be empty",
        ),
        (
            "TRIGGER_RELAY_MAX_INPUT_BYTES",
            "10000000",
            "TRIGGER_RELAY_MAX_INPUT_BYTES must be 1 to",
        ),
    ] {
        let output = relay_run_output(&[(variable, value)]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{variable}={value:?} was accepted"
        );
        assert!(stderr.contains(expected), "{variable}: {stderr}");
    }
    let long_queue = "q".repeat(1001);
    let output = relay_run_output(&[("TRIGGER_RELAY_TEMPORAL_TASK_QUEUE", &long_queue)]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("at most 1000"));
}

/// guarantees §4.6: `replay --dry-run` lists and changes nothing; `replay` re-dispatches with a
/// new generation and a new workflow id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_by_hand() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let relay = RelayProcess::spawn(&db.url, &temporal.address(), &[]);
    let ids = db.insert_rows(3).await;
    db.wait_all_dispatched(Duration::from_secs(30)).await;
    let pg = db.connect().await;
    // The trigger workflow (next issue) finishes rows; here we finish one by hand.
    pg.execute(
        "UPDATE trigger_relay_outbox SET state = 'done', finished_at = now() WHERE id = $1",
        &[&ids[0]],
    )
    .await
    .expect("finish row");

    let refused = relay_cli(&db.url, &["replay"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("at least one of --id"));

    let dry = relay_cli(&db.url, &["replay", "--state", "done", "--dry-run"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(out.contains("would replay 1 row(s)"), "{out}");
    assert!(
        out.contains(&format!("trigger-outbox-{}-g0", ids[0])),
        "{out}"
    );
    assert_eq!(
        db.state_of(ids[0]).await,
        "done",
        "a dry run changes nothing"
    );

    // Dispatched rows need --include-dispatched.
    let none = relay_cli(&db.url, &["replay", "--id", &ids[1].to_string()]);
    assert!(String::from_utf8_lossy(&none.stdout).contains("replayed 0 row(s)"));

    // Without --state an id range picks failed rows only (README, "The command line").
    let range = format!("{}..{}", ids[0], ids[1]);
    let done = relay_cli(
        &db.url,
        &[
            "replay",
            "--id-range",
            &range,
            "--state",
            "done,dispatched",
            "--include-dispatched",
            "--json",
        ],
    );
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&done.stdout).expect("replay json");
    assert_eq!(doc["rows"].as_array().map(Vec::len), Some(2));

    wait_for(
        "replayed rows to be dispatched again",
        Duration::from_secs(30),
        || async {
            let rows = pg
                .query(
                    "SELECT count(*) FROM trigger_relay_outbox
                 WHERE generation = 1 AND state = 'dispatched'",
                    &[],
                )
                .await
                .ok()?;
            (rows[0].get::<_, i64>(0) == 2).then_some(())
        },
    )
    .await;
    let client = temporal.client().await;
    let ids_in_temporal = wait_workflow_ids(&client, 5, Duration::from_secs(30)).await;
    let set = assert_unique(&ids_in_temporal);
    // Ids are `{prefix}-{row}-g{generation}-{firing uuid}` (schema version 3).
    let has = |id: i64, generation: u8| {
        set.iter()
            .any(|w| w.starts_with(&format!("trigger-outbox-{id}-g{generation}-")))
    };
    assert!(has(ids[0], 1) && has(ids[1], 1), "{set:?}");
    assert!(has(ids[0], 0), "history of g0 kept");
    assert_eq!(relay.metric("trigger_relay_replays_total").await, 2.0);
    db.drop_db().await;
}

/// guarantees §1.1: the daemon refuses a missing or different schema with a message saying what
/// to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_unknown_schema() {
    let empty = TestDb::create_empty().await;
    let out = relay_cli(&empty.url, &["status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not installed") && err.contains("migrate trigger_relay"),
        "{err}"
    );
    empty.drop_db().await;

    let db = TestDb::create().await;
    db.connect()
        .await
        .batch_execute("INSERT INTO trigger_relay_schema_version (version) VALUES (99)")
        .await
        .expect("bump version");
    let mut relay = RelayProcess::spawn(&db.url, "http://127.0.0.1:1", &[]);
    let status = wait_for("the relay to exit", Duration::from_secs(20), || {
        let status = relay_try_wait(&mut relay);
        async move { status }
    })
    .await;
    assert!(!status.success());
    let out = relay_cli(&db.url, &["status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("version Some(99)") && err.contains("upgrade trigger-relay"),
        "{err}"
    );
    db.drop_db().await;
}

fn relay_try_wait(relay: &mut RelayProcess) -> Option<std::process::ExitStatus> {
    relay.try_wait()
}

/// guarantees §5.4: SIGTERM stops the daemon cleanly and promptly, leaving no claim behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let mut relay = RelayProcess::spawn(&db.url, &temporal.address(), &[]);
    relay.wait_ready().await;
    db.insert_rows(200).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, took) = relay.sigterm(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
    eprintln!("stopped {took:?} after SIGTERM");
    let pg = db.connect().await;
    let claimed: i64 = pg
        .query_one(
            "SELECT count(*) FROM trigger_relay_outbox WHERE state = 'pending' AND claimed_by IS NOT NULL",
            &[],
        )
        .await
        .expect("claims")
        .get(0);
    assert_eq!(claimed, 0, "a clean stop releases its claims");
    db.drop_db().await;
}

/// guarantees §4.7: finished rows older than the retention are deleted with their ledger rows;
/// recent ones, failed ones and unfinished ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_finished_rows_only() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let pg = db.connect().await;
    pg.batch_execute(
        "SET trigger_relay.notify = off;
         INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, due_at, state, skip_reason, finished_at)
         VALUES (1, 1, 'old-done', now(), 'done', NULL, now() - interval '2 hours'),
                (1, 1, 'old-skipped', now(), 'skipped', 'condition_false', now() - interval '2 hours'),
                (1, 1, 'old-cancelled', now(), 'cancelled', NULL, now() - interval '2 hours'),
                (1, 1, 'old-failed', now(), 'failed', NULL, now() - interval '2 hours'),
                (1, 1, 'new-done', now(), 'done', NULL, now() - interval '10 minutes'),
                (1, 1, 'waiting', now(), 'dispatched', NULL, NULL);
         INSERT INTO trigger_relay_action_ledger (outbox_id, action_id, generation, idempotency_key)
         SELECT id, 7, 0, 'k' FROM trigger_relay_outbox WHERE user_pk = 'old-done';",
    )
    .await
    .expect("insert finished rows");
    let relay = RelayProcess::spawn(
        &db.url,
        &temporal.address(),
        &[
            ("TRIGGER_RELAY_RETENTION", "1h"),
            ("TRIGGER_RELAY_RETENTION_INTERVAL", "1s"),
        ],
    );
    relay.wait_ready().await;
    wait_for("retention to run", Duration::from_secs(30), || async {
        (relay.metric("trigger_relay_retention_deleted_total").await == 3.0).then_some(())
    })
    .await;
    let left: Vec<String> = pg
        .query("SELECT user_pk FROM trigger_relay_outbox ORDER BY id", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["old-failed", "new-done", "waiting"]);
    let ledger: i64 = pg
        .query_one("SELECT count(*) FROM trigger_relay_action_ledger", &[])
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(ledger, 0, "ledger rows go with their outbox row");
    db.drop_db().await;
}

/// guarantees §4.4: a namespace that does not exist yet (or a Temporal that fails the worker's
/// start-up checks) keeps the daemon up and not ready; once the namespace exists the relay
/// and the workflow worker carry on by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_relay_wait_for_a_missing_namespace() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let mut relay = RelayProcess::spawn(
        &db.url,
        &temporal.address(),
        &[
            ("TRIGGER_RELAY_TEMPORAL_NAMESPACE", "created-late"),
            ("TRIGGER_RELAY_POLL_INTERVAL", "1s"),
            ("TRIGGER_RELAY_STATS_INTERVAL", "1s"),
        ],
    );
    let ids = db.insert_rows(3).await;
    wait_for(
        "the relay to try and fail",
        Duration::from_secs(30),
        || async {
            let errors = relay
                .get("/metrics")
                .await
                .map(|(_, text)| {
                    text.contains(
                        "trigger_relay_temporal_errors_total{operation=\"start_workflow\"} ",
                    )
                })
                .unwrap_or(false);
            errors.then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        relay.try_wait().is_none(),
        "the daemon must not exit over a missing namespace"
    );
    assert!(matches!(relay.get("/readyz").await, Some((503, _))));
    assert_eq!(db.count("pending").await, 3);

    let created = std::process::Command::new(temporal_bin())
        .args(["operator", "namespace", "create", "--address"])
        .arg(format!("127.0.0.1:{}", temporal.port))
        .arg("created-late")
        .output()
        .expect("temporal operator namespace create");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );

    db.wait_all_dispatched(Duration::from_secs(60)).await;
    // The restarted worker runs the workflows: each reaches its Python activity.
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
    wait_for(
        "the worker to run the workflow",
        Duration::from_secs(60),
        || {
            let workflow_id = workflow_id.clone();
            let port = temporal.port;
            async move {
                let shown = std::process::Command::new(temporal_bin())
                    .args([
                        "workflow",
                        "show",
                        "--namespace",
                        "created-late",
                        "--address",
                    ])
                    .arg(format!("127.0.0.1:{port}"))
                    .args(["--workflow-id", &workflow_id])
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&shown.stdout)
                    .contains("ActivityTaskScheduled")
                    .then_some(())
            }
        },
    )
    .await;
    relay.wait_ready().await;
    db.drop_db().await;
}

/// `temporal workflow <args>` against the test's dev server; its stdout.
fn temporal_cli(temporal: &TemporalServer, args: &[&str]) -> String {
    let output = std::process::Command::new(temporal_bin())
        .args(["workflow"])
        .args(args)
        .args(["--address", &format!("127.0.0.1:{}", temporal.port)])
        .args(["--output", "json"])
        .output()
        .expect("temporal CLI");
    assert!(
        output.status.success(),
        "temporal workflow {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn wait_workflow_closed(temporal: &TemporalServer, workflow_id: &str) {
    wait_for("the workflow to close", Duration::from_secs(60), || async {
        let described = temporal_cli(temporal, &["describe", "--workflow-id", workflow_id]);
        (!described.contains("WORKFLOW_EXECUTION_STATUS_RUNNING")).then_some(())
    })
    .await;
}

/// guarantees §4.3: after `TRUNCATE ... RESTART IDENTITY` (as after a point-in-time restore
/// or a cloned staging database) a new row reuses an old row's id. Its firing gets a
/// workflow of its own, and the old firing's workflow, when it ends, does not write its
/// outcome onto the new row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_row_id_gets_its_own_workflow() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let relay = RelayProcess::spawn(
        &db.url,
        &temporal.address(),
        &[("TRIGGER_RELAY_POLL_INTERVAL", "1s")],
    );
    relay.wait_ready().await;
    let pg = db.connect().await;
    let first_id = db.insert_due_in("1 hour").await;
    db.wait_all_dispatched(Duration::from_secs(30)).await;
    let workflow_of = |id: i64| {
        let pg = &pg;
        async move {
            pg.query_one(
                "SELECT workflow_id, state FROM trigger_relay_outbox WHERE id = $1",
                &[&id],
            )
            .await
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .expect("row")
        }
    };
    let (old_workflow, _) = workflow_of(first_id).await;

    pg.batch_execute("TRUNCATE trigger_relay_outbox RESTART IDENTITY CASCADE")
        .await
        .expect("truncate");
    let second_id = db.insert_due_in("1 hour").await;
    assert_eq!(second_id, first_id, "the identity restarted");
    db.wait_all_dispatched(Duration::from_secs(30)).await;
    let (new_workflow, _) = workflow_of(second_id).await;
    assert_ne!(
        new_workflow, old_workflow,
        "the new firing must not be taken for the old one's workflow"
    );
    let described = temporal_cli(&temporal, &["describe", "--workflow-id", &new_workflow]);
    assert!(
        described.contains("WORKFLOW_EXECUTION_STATUS_RUNNING"),
        "{described}"
    );
    assert_eq!(
        relay
            .metric("trigger_relay_workflows_started_total{result=\"already_started\"}")
            .await,
        0.0
    );

    // The old firing's workflow is cancelled while waiting: it records `cancelled`, for its
    // own firing only.
    temporal_cli(&temporal, &["cancel", "--workflow-id", &old_workflow]);
    wait_workflow_closed(&temporal, &old_workflow).await;
    let (_, state) = workflow_of(second_id).await;
    assert_eq!(
        state, "dispatched",
        "the old workflow wrote onto the new row"
    );
    drop(relay);
    db.drop_db().await;
}

/// guarantees §4.8: a workflow terminated by an operator leaves no row `dispatched` forever:
/// the reconciler fails it with the reason, and `replay` starts it again, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_workflow_fails_its_row_and_replay_restarts_it() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let relay = RelayProcess::spawn(
        &db.url,
        &temporal.address(),
        &[
            ("TRIGGER_RELAY_POLL_INTERVAL", "1s"),
            ("TRIGGER_RELAY_RECONCILE_INTERVAL", "1s"),
            ("TRIGGER_RELAY_RECONCILE_AFTER", "2s"),
        ],
    );
    relay.wait_ready().await;
    let pg = db.connect().await;
    let id = db.insert_due_in("7 days").await;
    db.wait_all_dispatched(Duration::from_secs(30)).await;
    // Still running, waiting for its due time: the reconciler leaves it alone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(db.state_of(id).await, "dispatched");
    let workflow_id: String = pg
        .query_one(
            "SELECT workflow_id FROM trigger_relay_outbox WHERE id = $1",
            &[&id],
        )
        .await
        .expect("row")
        .get(0);

    temporal_cli(
        &temporal,
        &[
            "terminate",
            "--workflow-id",
            &workflow_id,
            "--reason",
            "operator",
        ],
    );
    let error = wait_for(
        "the reconciler to fail the row",
        Duration::from_secs(30),
        || async {
            let row = pg
                .query_one(
                    "SELECT state, last_error FROM trigger_relay_outbox WHERE id = $1",
                    &[&id],
                )
                .await
                .ok()?;
            (row.get::<_, String>(0) == "failed").then(|| row.get::<_, String>(1))
        },
    )
    .await;
    assert!(error.contains("workflow_terminated"), "{error}");
    assert!(error.contains(&workflow_id), "{error}");
    assert_eq!(
        relay
            .metric("trigger_relay_reconciled_total{result=\"failed\"}")
            .await,
        1.0
    );

    let replayed = relay_cli(&db.url, &["replay", "--id", &id.to_string()]);
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    db.wait_all_dispatched(Duration::from_secs(30)).await;
    let (generation, new_workflow): (i32, String) = pg
        .query_one(
            "SELECT generation, workflow_id FROM trigger_relay_outbox WHERE id = $1",
            &[&id],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("row");
    assert_eq!(generation, 1);
    assert_ne!(new_workflow, workflow_id);
    let described = temporal_cli(&temporal, &["describe", "--workflow-id", &new_workflow]);
    assert!(
        described.contains("WORKFLOW_EXECUTION_STATUS_RUNNING"),
        "{described}"
    );
    // Started once: the replayed row is not failed again while its new workflow runs.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(db.state_of(id).await, "dispatched");
    drop(relay);
    db.drop_db().await;
}

/// guarantees §4.5: a task of the daemon that dies (here a panic injected into the relay
/// task, as a decoding panic did before) ends the process non-zero instead of leaving a
/// ready process that relays nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_task_ends_the_process() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    for task in ["relay", "listener", "stats"] {
        let mut relay = RelayProcess::spawn(
            &db.url,
            &temporal.address(),
            &[("TRIGGER_RELAY_TEST_PANIC_TASK", task)],
        );
        let status = wait_for(
            "the daemon to exit after the task died",
            Duration::from_secs(60),
            || {
                let exited = relay.try_wait();
                async move { exited }
            },
        )
        .await;
        assert!(!status.success(), "{task}: exited with {status:?}");
    }
    db.drop_db().await;
}

/// A configuration error: a bad value in an environment variable is reported with the variable's
/// name, not only the flag's.
#[test]
fn a_bad_environment_value_names_its_variable() {
    let output = relay_run_output(&[("TRIGGER_RELAY_POLL_INTERVAL", "abc")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--poll-interval"), "{stderr}");
    assert!(stderr.contains("TRIGGER_RELAY_POLL_INTERVAL"), "{stderr}");
}

/// guarantees §5.1: `cancel` exits non-zero when a workflow could not be asked to cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reports_failed_requests() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let pg = db.connect().await;
    let id: i64 = pg
        .query_one(
            "INSERT INTO trigger_relay_outbox
                 (event_id, trigger_id, user_pk, due_at, state, workflow_id, dispatched_at)
             VALUES (1, 1, '7', now(), 'dispatched', 'no-such-workflow', now()) RETURNING id",
            &[],
        )
        .await
        .expect("insert")
        .get(0);
    let mut cmd = std::process::Command::new(relay_bin());
    cmd.args(["cancel", "--id", &id.to_string()])
        .env("TRIGGER_RELAY_DATABASE_URL", &db.url)
        .env("TRIGGER_RELAY_TEMPORAL_ADDRESS", temporal.address())
        .env("TRIGGER_RELAY_LOG_FORMAT", "text");
    let output = output_within(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("workflow cancellation failed"), "{stdout}");
    assert!(!output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("run cancel again"), "{stderr}");
    db.drop_db().await;
}

/// guarantees §4.6: `replay --dry-run` lists without taking row locks, so it neither waits
/// for nor blocks the site's transactions; a real replay re-checks each row's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_dry_run_takes_no_locks() {
    let db = TestDb::create().await;
    let pg = db.connect().await;
    pg.batch_execute(
        "INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, due_at, state, finished_at)
         SELECT 1, 1, '7', now(), 'done', now() FROM generate_series(1, 3)",
    )
    .await
    .expect("insert");
    // Another session holds a lock on every row, as a long site transaction would.
    let mut holder = db.connect().await;
    let tx = holder.transaction().await.expect("begin");
    tx.batch_execute("SELECT id FROM trigger_relay_outbox FOR UPDATE")
        .await
        .expect("lock rows");
    // Before, the listing took `FOR UPDATE` locks even for a dry run and waited here until
    // output_within killed it.
    let mut cmd = std::process::Command::new(relay_bin());
    cmd.args(["replay", "--state", "done", "--dry-run"])
        .env("TRIGGER_RELAY_DATABASE_URL", &db.url)
        .env("TRIGGER_RELAY_LOG_FORMAT", "text");
    let output = output_within(cmd, Duration::from_secs(20));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("would replay 3 row(s)"));
    tx.rollback().await.expect("rollback");
    db.drop_db().await;
}
