//! The daemon's memory under hostile rows: large contexts must not take the relay past its
//! container's memory limit (docs/contract.md, "Memory"). Real PostgreSQL, a real Temporal
//! dev server and the real daemon binary, its memory limited as a container's is.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use trigger_relay::config::DatabaseConfig;
use trigger_relay::db::{ClaimLimits, Db, PgTarget};
use trigger_relay::metrics::Metrics;
use trigger_relay::outbox::{BadPayload, PoisonRow};

const MIB: u64 = 1024 * 1024;

/// The limit the daemon runs under: half the Kubernetes manifest's 256 MiB
/// (deploy/kubernetes), so that the default batch budget is shown to leave room.
const MEMORY_LIMIT: u64 = 128 * MIB;

/// TRIGGER_RELAY_MAX_INPUT_BYTES of the daemon under test (its default).
const MAX_INPUT_BYTES: u64 = 2 * MIB;

/// A context of `bytes` bytes of text, as `jsonb_build_object('blob', ...)` prints it
/// (`{"blob": "..."}`, 12 bytes around the string), from row number `g` (no two alike).
fn blob_context(bytes: u64) -> String {
    format!(
        "jsonb_build_object('blob', left(repeat(md5(g::text), {}), {}))",
        bytes / 32 + 1,
        bytes - 12
    )
}

/// 100 rows of 1.5 MB context (under the 2 MiB per-row limit) among 30 small rows, and
/// rows the relay must fail: a 3 MB context, a context of a few bytes on disk that
/// PostgreSQL prints as 4 MB of digits, and one of 1.2 MB whose quotes, escaped once more
/// in the workflow input, take that input past the limit. Before the claim measured
/// contexts and bounded a batch by bytes, the first batch (100 rows, 150 MB of context)
/// took the daemon to about 400 MB and it was killed at this limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_contexts_keep_the_relay_within_its_memory_limit() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let pg = db.connect().await;
    let insert = |user: &str, context: String, rows: u32| {
        format!(
            "INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, context, due_at)
             SELECT 1, 1, '{user}', {context}, now() FROM generate_series(1, {rows}) AS g;"
        )
    };
    let numbers = "jsonb_build_object('n', (SELECT jsonb_agg('1e131071'::numeric) \
                   FROM generate_series(1, 32)))";
    let quotes = format!("jsonb_build_object('q', repeat('\"', {}))", 600_000);
    pg.batch_execute(
        &[
            insert("small", "jsonb_build_object('n', g)".into(), 10),
            insert("over", blob_context(3_000_000), 1),
            insert("big", blob_context(1_500_000), 50),
            insert("numbers", numbers.into(), 1),
            insert("small", "jsonb_build_object('n', g)".into(), 10),
            insert("quotes", quotes, 1),
            insert("big", blob_context(1_500_000), 50),
            insert("small", "jsonb_build_object('n', g)".into(), 10),
        ]
        .concat(),
    )
    .await
    .expect("insert rows");
    let sizes: Vec<(String, i64, i32)> = pg
        .query(
            "SELECT user_pk, count(*), max(octet_length(context::text))
             FROM trigger_relay_outbox GROUP BY user_pk ORDER BY user_pk",
            &[],
        )
        .await
        .expect("sizes")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    eprintln!("rows (user_pk, count, largest context as text): {sizes:?}");
    let big = sizes
        .iter()
        .find(|(user, ..)| user == "big")
        .expect("big rows");
    assert!(
        big.1 == 100 && (1_400_000..1_600_000).contains(&big.2),
        "{sizes:?}"
    );

    let mut relay = RelayProcess::spawn_with_data_limit(
        &db.url,
        &temporal.address(),
        // The relay alone: the workflow worker holds what its own cache keeps, which this
        // test does not bound (docs/contract.md, "Memory").
        &[
            ("TRIGGER_RELAY_MODE", "relay"),
            (
                "TRIGGER_RELAY_MAX_INPUT_BYTES",
                &MAX_INPUT_BYTES.to_string(),
            ),
        ],
        MEMORY_LIMIT,
    );
    let pid = relay.pid();
    let started = Instant::now();
    let mut peak_anon = 0;
    loop {
        if let Some(status) = relay.try_wait() {
            panic!(
                "the daemon died ({status}) after {:?}, {} rows still pending; its log:\n{}",
                started.elapsed(),
                db.count("pending").await,
                relay.log()
            );
        }
        peak_anon = peak_anon.max(proc_status_bytes(pid, "RssAnon").unwrap_or(0));
        if db.count("pending").await == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "rows still pending after 300 s: {} dispatched, {} failed",
            db.count("dispatched").await,
            db.count("failed").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The kernel's own high-water mark of the resident set (file pages of the binary
    // included), not a sample.
    let hwm = proc_status_bytes(pid, "VmHWM").expect("VmHWM");
    eprintln!(
        "all rows settled in {:?}: VmHWM {} MiB, sampled peak RssAnon {} MiB, VmData now {} MiB",
        started.elapsed(),
        hwm / MIB,
        peak_anon / MIB,
        proc_status_bytes(pid, "VmData").unwrap_or(0) / MIB
    );
    assert!(
        hwm < MEMORY_LIMIT,
        "peak resident set {} MiB, over {} MiB",
        hwm / MIB,
        MEMORY_LIMIT / MIB
    );

    let states: Vec<(String, String, i64)> = pg
        .query(
            "SELECT user_pk, state, count(*) FROM trigger_relay_outbox
             GROUP BY user_pk, state ORDER BY user_pk, state",
            &[],
        )
        .await
        .expect("states")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected: Vec<(String, String, i64)> = [
        ("big", "dispatched", 100),
        ("numbers", "failed", 1),
        ("over", "failed", 1),
        ("quotes", "failed", 1),
        ("small", "dispatched", 30),
    ]
    .iter()
    .map(|(user, state, n)| (user.to_string(), state.to_string(), *n))
    .collect();
    assert_eq!(states, expected);
    let errors: Vec<(String, String)> = pg
        .query(
            "SELECT user_pk, last_error FROM trigger_relay_outbox WHERE state = 'failed'
             ORDER BY id",
            &[],
        )
        .await
        .expect("errors")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let error_of = |user: &str| -> &str {
        &errors
            .iter()
            .find(|(u, _)| u == user)
            .expect("a failed row")
            .1
    };
    // Measured by PostgreSQL and never fetched: the column, its size, the limit.
    let over = sizes
        .iter()
        .find(|(user, ..)| user == "over")
        .expect("over")
        .2;
    assert_eq!(
        error_of("over"),
        format!(
            "bad payload: column context is {over} bytes as text, over the limit of \
             {MAX_INPUT_BYTES} bytes (TRIGGER_RELAY_MAX_INPUT_BYTES); the relay failed the \
             row without reading it"
        )
    );
    assert!(
        error_of("numbers").starts_with("bad payload: column context is 41943"),
        "{errors:?}"
    );
    // Under the limit as text, over it once escaped in the workflow input: the relay's
    // own check after the fetch.
    assert!(
        error_of("quotes").starts_with("bad payload: workflow input is 24")
            && error_of("quotes").ends_with(&format!(
                "over the limit of {MAX_INPUT_BYTES} bytes (TRIGGER_RELAY_MAX_INPUT_BYTES)"
            )),
        "{errors:?}"
    );
    assert_eq!(
        relay
            .metric("trigger_relay_rows_failed_total{reason=\"bad_payload\"}")
            .await,
        3.0
    );
    assert_eq!(
        relay
            .metric("trigger_relay_workflows_started_total{result=\"started\"}")
            .await,
        130.0
    );
    // Every row was claimed once: no batch was lost to a crash and claimed again.
    let attempts: i32 = pg
        .query_one("SELECT max(attempts) FROM trigger_relay_outbox", &[])
        .await
        .expect("attempts")
        .get(0);
    assert_eq!(attempts, 1);
    assert_eq!(relay.try_wait(), None, "the daemon is still running");
    drop(relay);
    db.drop_db().await;
}

fn daemon_db(url: &str) -> Db {
    let config = DatabaseConfig {
        database_url: url.to_owned(),
        database_pool_size: None,
        database_timeout: Duration::from_secs(5),
        database_statement_timeout: Duration::from_secs(30),
        database_tcp_user_timeout: Duration::from_secs(30),
    };
    let target = PgTarget::new(&config).expect("target");
    Db::new(&target, &config, 2, Metrics::new().expect("metrics")).expect("pool")
}

/// The claim through the daemon's own `Db`, as the daemon's login: a batch stops before the
/// row that would take it past its byte budget, always holds one row, returns an oversize
/// row without its context, and leaves the rows after the cut unclaimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_stops_at_its_byte_budget() {
    let db = TestDb::create().await;
    let pg = db.connect().await;
    // ids 1..6: 3 MB (over the 2 MiB limit), 1 MB, 1 MB, 1 MB, 9 bytes, 1 MB.
    let insert = |context: String| {
        format!(
            "INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, context, due_at)
             SELECT 1, 1, '7', {context}, now() FROM generate_series(1, 1) AS g;"
        )
    };
    pg.batch_execute(
        &[
            insert(blob_context(3_000_000)),
            insert(blob_context(1_000_000)),
            insert(blob_context(1_000_000)),
            insert(blob_context(1_000_000)),
            insert("jsonb_build_object('n', g)".into()),
            insert(blob_context(1_000_000)),
        ]
        .concat(),
    )
    .await
    .expect("insert rows");
    // What the statement itself sends back, in a transaction rolled back: the oversize
    // row's size, and no context.
    let sql =
        std::fs::read_to_string(repo_root().join("sql/queries/claim.sql")).expect("claim.sql");
    pg.batch_execute("BEGIN").await.expect("begin");
    let returned: Vec<(i64, Option<i32>, i32)> = pg
        .query(
            sql.as_str(),
            &[
                &100i64,
                &"raw",
                &60f64,
                &(2 * 1024 * 1024i32),
                &2_500_000i64,
                &"trigger-outbox",
            ],
        )
        .await
        .expect("claim")
        .iter()
        .map(|r| {
            let context: Option<String> = r.get("context");
            (
                r.get("id"),
                context.map(|c| i32::try_from(c.len()).unwrap_or(-1)),
                r.get("context_bytes"),
            )
        })
        .collect();
    pg.batch_execute("ROLLBACK").await.expect("rollback");
    let mut returned = returned;
    returned.sort();
    assert_eq!(
        returned,
        vec![
            (1, None, 3_000_000),
            (2, Some(1_000_000), 1_000_000),
            (3, Some(1_000_000), 1_000_000)
        ]
    );

    let daemon = daemon_db(&db.url);
    let lease = Duration::from_secs(60);
    let limits = |batch_bytes: u64| ClaimLimits {
        rows: 100,
        row_bytes: 2 * 1024 * 1024,
        batch_bytes,
    };
    let ids = |rows: &[Result<trigger_relay::outbox::ClaimedRow, PoisonRow>]| -> Vec<i64> {
        rows.iter()
            .map(|r| match r {
                Ok(row) => row.id,
                Err(poison) => poison.id(),
            })
            .collect()
    };

    // 2.5 MB: the oversize row (no bytes returned), then two 1 MB rows; the third would
    // make 3 MB.
    let claim = daemon
        .claim(limits(2_500_000), "a", lease, "trigger-outbox")
        .await
        .expect("claim");
    assert_eq!(ids(&claim.rows), vec![1, 2, 3]);
    assert_eq!((claim.locked, claim.cut()), (6, true));
    assert_eq!(
        claim.rows[0].as_ref().err(),
        Some(&PoisonRow::Oversize {
            id: 1,
            generation: 0,
            problem: BadPayload::ContextTooLarge {
                size: 3_000_000,
                limit: 2 * 1024 * 1024
            }
        })
    );
    assert!(
        claim.rows[1..]
            .iter()
            .all(|r| r.as_ref().is_ok_and(|row| row.context.len() == 1_000_000))
    );
    // Left behind: not claimed, not counted as an attempt.
    let unclaimed: Vec<i64> = pg
        .query(
            "SELECT id FROM trigger_relay_outbox
             WHERE claimed_by IS NULL AND attempts = 0 ORDER BY id",
            &[],
        )
        .await
        .expect("unclaimed")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(unclaimed, vec![4, 5, 6]);

    // A budget smaller than any row still takes one row.
    let claim = daemon
        .claim(limits(1), "b", lease, "trigger-outbox")
        .await
        .expect("claim");
    assert_eq!(ids(&claim.rows), vec![4]);
    assert_eq!((claim.locked, claim.cut()), (3, true));
    // The last two fit: nothing cut, fewer rows than the limit, so the outbox is drained.
    let claim = daemon
        .claim(limits(1_000_009), "c", lease, "trigger-outbox")
        .await
        .expect("claim");
    assert_eq!(ids(&claim.rows), vec![5, 6]);
    assert_eq!((claim.locked, claim.cut()), (2, false));
    let claim = daemon
        .claim(limits(1), "d", lease, "trigger-outbox")
        .await
        .expect("claim");
    assert!(claim.rows.is_empty() && !claim.cut());
    db.drop_db().await;
}

/// Three replicas whose batches are cut by bytes (100 KB contexts, a 1 MB budget: about 10
/// rows of a 50-row batch) start each of 300 rows exactly once, each claimed once, and
/// drain on past a cut batch without waiting for a poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_cut_by_bytes_start_each_row_once() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let pg = db.connect().await;
    let relays: Vec<_> = (0..3)
        .map(|i| {
            RelayProcess::spawn(
                &db.url,
                &temporal.address(),
                &[
                    ("TRIGGER_RELAY_MODE", "relay"),
                    ("TRIGGER_RELAY_REPLICA", &format!("replica-{i}")),
                    ("TRIGGER_RELAY_BATCH_SIZE", "50"),
                    ("TRIGGER_RELAY_CLAIM_MAX_BYTES", "1000000"),
                    // No poll: a drain that stopped at a cut batch, as if the outbox were
                    // empty, would leave the rest pending until the next notification.
                    ("TRIGGER_RELAY_POLL_INTERVAL", "1h"),
                ],
            )
        })
        .collect();
    for relay in &relays {
        relay.wait_ready().await;
        relay.wait_listening().await;
    }
    for _ in 0..6 {
        pg.batch_execute(&format!(
            "INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, context, due_at)
             SELECT 1, 1, '7', {}, now() FROM generate_series(1, 50) AS g",
            blob_context(100_000)
        ))
        .await
        .expect("insert rows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.wait_all_dispatched(Duration::from_secs(180)).await;
    assert_eq!(db.count("dispatched").await, 300);
    let ids = wait_workflow_ids(&temporal.client().await, 300, Duration::from_secs(60)).await;
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        (ids.len(), unique.len()),
        (300, 300),
        "a workflow started twice"
    );
    let attempts: (i32, i32) = pg
        .query_one(
            "SELECT min(attempts), max(attempts) FROM trigger_relay_outbox",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("attempts");
    assert_eq!(attempts, (1, 1), "a row was claimed twice");
    let mut claims = 0.0;
    for relay in &relays {
        claims += relay
            .metric("trigger_relay_postgres_query_duration_seconds_count{query=\"claim\"}")
            .await;
    }
    eprintln!("{claims} claims for 300 rows across the replicas");
    // At most 10 rows of 100 KB per claim: 30 claims at the very least.
    assert!(claims >= 30.0, "{claims} claims for 300 rows");
    drop(relays);
    db.drop_db().await;
}
