//! Query plans on a million-row outbox: the statements every replica runs on a timer (backlog
//! gauges, retention, the reconciler's claim: guarantees §6.1, §4.7, §4.8) read a handful of
//! pages, not the table's history. Each is run with `EXPLAIN (ANALYZE, BUFFERS)` on the real
//! PostgreSQL, inside a transaction that is rolled back, and its plan is kept here.

mod common;

use common::*;
use serde_json::Value;

/// Pages a periodic statement may touch on this outbox besides those of the rows it
/// changes or returns: a few index pages. Walking the table would touch over 10,000.
const PAGE_BUDGET: i64 = 300;
/// Pages per row changed or returned: an updated row writes its new version and an entry
/// in each of the table's indexes.
const PAGES_PER_ROW: i64 = 30;

/// Runs `sql` with `params` (SQL literals) under EXPLAIN (ANALYZE, BUFFERS) and returns the
/// top plan node.
async fn explain(client: &tokio_postgres::Client, sql: &str, params: &str) -> Value {
    let statement = format!(
        "BEGIN; PREPARE q AS {sql}; \
         EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE q{params};"
    );
    let messages = client.simple_query(&statement).await.expect("explain");
    client
        .batch_execute("ROLLBACK; DEALLOCATE q")
        .await
        .expect("rollback");
    let text = messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a plan");
    let plans: Value = serde_json::from_str(&text).expect("plan JSON");
    plans[0]["Plan"].clone()
}

fn pages(plan: &Value) -> i64 {
    let count = |key: &str| plan[key].as_i64().unwrap_or(0);
    count("Shared Hit Blocks") + count("Shared Read Blocks")
}

/// Every node's type, with its index where it has one, to show in a failure.
fn nodes(plan: &Value, out: &mut Vec<String>) {
    let kind = plan["Node Type"].as_str().unwrap_or("?");
    match plan["Index Name"].as_str() {
        Some(index) => out.push(format!("{kind} on {index}")),
        None => out.push(kind.to_owned()),
    }
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            nodes(child, out);
        }
    }
}

/// The names of the plan's subplans (`CTE claimable`, ...), at any depth.
fn subplans(plan: &Value) -> Vec<String> {
    let mut names: Vec<String> = plan["Subplan Name"]
        .as_str()
        .map(str::to_owned)
        .into_iter()
        .collect();
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            names.extend(subplans(child));
        }
    }
    names
}

fn query(name: &str) -> String {
    let sql =
        std::fs::read_to_string(repo_root().join("sql/queries").join(name)).expect("query file");
    // PREPARE takes one statement: the file's comments stay, its trailing newline goes.
    sql.trim_end().trim_end_matches(';').to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_statements_stay_small_on_a_million_rows() {
    let db = TestDb::create().await;
    let pg = db.connect().await;
    // A year of history: a million finished rows (done a day ago: none old enough for a
    // 30-day retention), 100 finished long ago, 200 pending, 500 dispatched with due times
    // days ahead, 50 failed.
    pg.batch_execute(
        "SET synchronous_commit = off;
         INSERT INTO trigger_relay_outbox
             (event_id, trigger_id, user_pk, due_at, state, created_at, dispatched_at,
              finished_at, workflow_id)
         SELECT 1, 1, (g % 1000)::text, now() - interval '1 day', 'done',
                now() - interval '1 day', now() - interval '1 day', now() - interval '1 day',
                'trigger-outbox-' || g
         FROM generate_series(1, 1000000) AS g;
         INSERT INTO trigger_relay_outbox
             (event_id, trigger_id, user_pk, due_at, state, finished_at)
         SELECT 1, 1, '1', now() - interval '90 days', 'done', now() - interval '60 days'
         FROM generate_series(1, 100);
         INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, due_at)
         SELECT 1, 1, '1', now() FROM generate_series(1, 200);
         INSERT INTO trigger_relay_outbox
             (event_id, trigger_id, user_pk, due_at, state, dispatched_at, workflow_id)
         SELECT 1, 1, '1', now() + interval '5 days', 'dispatched',
                now() - interval '1 hour', 'w' || g
         FROM generate_series(1, 500) AS g;
         INSERT INTO trigger_relay_outbox
             (event_id, trigger_id, user_pk, due_at, state, finished_at, last_error)
         SELECT 1, 1, '1', now(), 'failed', now(), 'boom' FROM generate_series(1, 50);",
    )
    .await
    .expect("a million rows");
    // Its own statement: VACUUM cannot run in the implicit transaction of a batch.
    pg.batch_execute("VACUUM ANALYZE trigger_relay_outbox")
        .await
        .expect("vacuum");

    let cases = [
        (
            "backlog.sql",
            String::new(),
            "trigger_relay_outbox_pending_idx",
        ),
        // A 90-day retention: nothing qualifies, the common case between two passes, and
        // the one where walking the primary key read the whole table.
        (
            "delete_finished.sql",
            format!("({}, 1000)", 90 * 86_400),
            "trigger_relay_outbox_finished_idx",
        ),
        (
            "dispatched_overdue.sql",
            "(600)".to_owned(),
            "trigger_relay_outbox_dispatched_idx",
        ),
        (
            "reconcile_claim.sql",
            "(100, 600, 'replica')".to_owned(),
            "trigger_relay_outbox_dispatched_idx",
        ),
        // TRIGGER_RELAY_MAX_INPUT_BYTES and TRIGGER_RELAY_CLAIM_MAX_BYTES at their defaults.
        (
            "claim.sql",
            "(100, 'replica', 60, 2097152, 8388608, 'trigger-outbox')".to_owned(),
            "trigger_relay_outbox_pending_idx",
        ),
    ];
    for (file, params, index) in cases {
        let plan = explain(&pg, &query(file), &params).await;
        let mut shape = Vec::new();
        nodes(&plan, &mut shape);
        let touched = pages(&plan);
        let rows = plan["Actual Rows"].as_i64().unwrap_or(0);
        let budget = PAGE_BUDGET + PAGES_PER_ROW * rows;
        eprintln!(
            "{file}: {touched} pages for {rows} rows; {}",
            shape.join(" > ")
        );
        assert!(
            shape.iter().any(|node| node.ends_with(index)),
            "{file} does not use {index}: {shape:?}"
        );
        assert!(
            touched <= budget,
            "{file} touched {touched} pages for {rows} rows (budget {budget}): {shape:?}"
        );
        if file == "claim.sql" {
            // Each locked row's context is printed once, in the materialized `sized`, not
            // once per use of its size (sql/queries/claim.sql).
            assert!(
                subplans(&plan).iter().any(|name| name == "CTE sized"),
                "claim.sql measures contexts outside a materialized CTE: {:?}",
                subplans(&plan)
            );
            assert_eq!(rows, 100, "the claim returns its 100 small rows");
        }
    }
    // Retention deletes exactly the 100 rows finished long ago, through the index.
    let deleted: i64 = pg
        .query_one(
            &query("delete_finished.sql"),
            &[&(30.0 * 86_400.0), &1000i64],
        )
        .await
        .expect("retention")
        .get(0);
    assert_eq!(deleted, 100);
    db.drop_db().await;
}
