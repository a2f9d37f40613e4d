//! The daemon's statements against the real PostgreSQL, through its own `Db` (guarantees
//! §1.2, §1.3): what the relay and the workflow worker write, checked column by column.

mod common;

use std::time::Duration;

use common::*;
use trigger_relay::config::DatabaseConfig;
use trigger_relay::db::{Db, PgTarget};
use trigger_relay::metrics::Metrics;
use trigger_relay::outbox::{Outcome, State};

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

/// A workflow can finish before the relay has marked its row dispatched (a quick firing,
/// or a relay that died mid-call): its outcome then also records the workflow's run id
/// and dispatch time, which the relay's later mark_dispatched no longer can. The claim wrote
/// the workflow's id on the row before the start; any other workflow writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_recorded_on_a_pending_row_names_its_workflow() {
    let db = TestDb::create().await;
    let pg = db.connect().await;
    let (id, uuid): (i64, String) = pg
        .query_one(
            "INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, due_at, workflow_id)
             VALUES (1, 1, '7', now(), 'wf-1') RETURNING id, firing_uuid::text",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("insert");
    let daemon = daemon_db(&db.url);
    let outcome = |firing_uuid: Option<String>| Outcome {
        outbox_id: id,
        generation: 0,
        firing_uuid,
        state: State::Done,
        reason: None,
        error: None,
        performed: vec![1],
        site: None,
    };
    // Another firing's workflow (same row id, other uuid) writes nothing.
    let other = daemon
        .record_outcome(
            &outcome(Some("00000000-0000-4000-8000-000000000000".into())),
            "wf-other",
            "run-other",
        )
        .await
        .expect("record");
    assert!(!other);
    // Nor does a workflow that is not the row's, with the row's own input copied.
    let forged = daemon
        .record_outcome(&outcome(Some(uuid.clone())), "wf-forged", "run-forged")
        .await
        .expect("record");
    assert!(!forged);
    let applied = daemon
        .record_outcome(&outcome(Some(uuid)), "wf-1", "run-1")
        .await
        .expect("record");
    assert!(applied);
    let row = pg
        .query_one(
            "SELECT state, workflow_id, run_id, dispatched_at IS NOT NULL, finished_at IS NOT NULL
             FROM trigger_relay_outbox WHERE id = $1",
            &[&id],
        )
        .await
        .expect("row");
    let columns: (String, Option<String>, Option<String>, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(
        columns,
        (
            "done".into(),
            Some("wf-1".into()),
            Some("run-1".into()),
            true,
            true
        )
    );
    db.drop_db().await;
}
