//! The daemon through PgBouncer in transaction mode (guarantees §4.9; README "PgBouncer in
//! transaction mode"): poll-only relaying and the operator commands, with a pooler that
//! keeps no prepared statement across transactions (PgBouncer 1.18,
//! tests/common/pgbouncer.rs).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::pgbouncer::PgBouncer;
use common::*;

/// guarantees §4.1, §4.2: 1,000 rows relayed through the pooler by a poll-only daemon: every row
/// dispatched, each workflow started once; `status` and `replay --dry-run` work through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_1000_rows_through_pgbouncer_in_transaction_mode() {
    let db = TestDb::create().await;
    let bouncer = PgBouncer::start(&db).await;
    let temporal = TemporalServer::start().await;
    let url = db.url_via(&bouncer.address());
    let relay = RelayProcess::spawn(
        &url,
        &temporal.address(),
        &[
            ("TRIGGER_RELAY_LISTEN", "false"),
            ("TRIGGER_RELAY_POLL_INTERVAL", "1s"),
            ("TRIGGER_RELAY_STATS_INTERVAL", "1s"),
            ("TRIGGER_RELAY_BATCH_SIZE", "50"),
        ],
    );
    relay.wait_ready().await;
    // Rows arrive while the daemon runs: 20 transactions of 50 (written directly, as the
    // site's own connection would; only the daemon goes through the pooler).
    for _ in 0..20 {
        db.insert_rows(50).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for(
        "every row to leave pending through the pooler",
        Duration::from_secs(120),
        || async {
            let pending = db.count("pending").await;
            if pending > 0 {
                assert!(
                    relay_alive(&relay),
                    "the daemon exited; pgbouncer log:\n{}",
                    bouncer.log()
                );
            }
            (pending == 0).then_some(())
        },
    )
    .await;
    assert_eq!(db.count("dispatched").await, 1000, "rows lost or failed");

    let client = temporal.client().await;
    let ids = wait_workflow_ids(&client, 1000, Duration::from_secs(60)).await;
    assert_eq!(
        ids.len(),
        1000,
        "Temporal has {} trigger workflows",
        ids.len()
    );
    let set: HashSet<&String> = ids.iter().collect();
    assert_eq!(set.len(), 1000, "a workflow id was started twice");
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
    assert_eq!(
        relay
            .metric("trigger_relay_workflows_started_total{result=\"started\"}")
            .await,
        1000.0,
        "new starts"
    );

    // The operator commands, through the same pooler.
    let status = relay_cli(&url, &["status", "--json"]);
    assert!(
        status.status.success(),
        "status through pgbouncer: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(doc["backlog"], 0, "{doc}");
    assert_eq!(doc["failed"], 0, "{doc}");
    let dispatched = doc["states"]
        .as_array()
        .and_then(|states| states.iter().find(|s| s["state"] == "dispatched"))
        .map(|s| s["rows"].clone());
    assert_eq!(dispatched, Some(1000.into()), "{doc}");

    let (first, last): (i64, i64) = {
        let row = pg
            .query_one("SELECT min(id), max(id) FROM trigger_relay_outbox", &[])
            .await
            .expect("id range");
        (row.get(0), row.get(1))
    };
    let range = format!("{first}..{}", first + 9);
    let dry = relay_cli(
        &url,
        &[
            "replay",
            "--id-range",
            &range,
            "--include-dispatched",
            "--dry-run",
        ],
    );
    assert!(
        dry.status.success(),
        "replay --dry-run through pgbouncer: {}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(out.contains("would replay 10 row(s)"), "{out}");
    let replayed: i64 = pg
        .query_one(
            "SELECT count(*) FROM trigger_relay_outbox WHERE generation <> 0 OR state <> 'dispatched'",
            &[],
        )
        .await
        .expect("rows changed")
        .get(0);
    assert_eq!(replayed, 0, "a dry run changed rows (ids {first}..{last})");

    drop(relay);
    drop(bouncer);
    db.drop_db().await;
}

fn relay_alive(relay: &RelayProcess) -> bool {
    // `try_wait` needs `&mut`; the metrics endpoint answering is proof enough of life here.
    std::net::TcpStream::connect(("127.0.0.1", relay.metrics_port)).is_ok()
}
