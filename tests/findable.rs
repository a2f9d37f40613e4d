//! Firings findable in Temporal (guarantees §6.6): every `trigger_workflow` carries the
//! outbox id, trigger id and name, event id and user pk as a memo, and as search attributes
//! where the namespace has them; a namespace without them gets the memo only and the daemon
//! says, once, which attributes are missing and how to add them. Real dev servers (one with
//! the attributes registered, one without), the real daemon.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use temporalio_client::{Client, WorkflowListOptions};

/// A trigger name that JSON, SQL and the visibility store must all carry untouched.
const NAME: &str = "Rappel « urgent » l'été 🚀";
/// A name with double quotes: carried untouched, but the dev server's SQLite visibility
/// cannot match it with `=` (README, "Finding a firing in Temporal").
const QUOTED: &str = "say \"hi\"";

/// The workflows matching `query`, as (workflow id, the execution's memo and search
/// attributes), once visibility lists `expected` of them.
async fn listed(client: &Client, query: &str, expected: usize) -> Vec<Listed> {
    wait_for(
        &format!("{expected} workflows for {query}"),
        Duration::from_secs(30),
        || async {
            let mut stream = client.list_workflows(query, WorkflowListOptions::default());
            let mut found = Vec::new();
            while let Some(item) = stream.next().await {
                let execution = match item {
                    Ok(execution) => execution,
                    Err(e) => {
                        eprintln!("list {query}: {e}");
                        return None;
                    }
                };
                let memo = execution.memo();
                let attributes = execution.search_attributes();
                found.push(Listed {
                    workflow_id: execution.id().to_owned(),
                    outbox_id: memo.get::<i64>("outbox_id").ok()??,
                    trigger_id: memo.get::<i64>("trigger_id").ok()??,
                    trigger_name: memo.get::<Option<String>>("trigger_name").ok()?.flatten(),
                    event_id: memo.get::<i64>("event_id").ok()??,
                    user_pk: memo.get::<String>("user_pk").ok()??,
                    attribute_names: attributes
                        .keys()
                        .filter(|k| {
                            SEARCH_ATTRIBUTES
                                .iter()
                                .any(|a| a.split('=').next() == Some(*k))
                        })
                        .map(str::to_owned)
                        .collect(),
                });
            }
            found.sort_by_key(|l| l.outbox_id);
            if found.len() != expected {
                eprintln!("{query}: {} listed so far", found.len());
            }
            (found.len() == expected).then_some(found)
        },
    )
    .await
}

#[derive(Debug)]
struct Listed {
    workflow_id: String,
    outbox_id: i64,
    trigger_id: i64,
    trigger_name: Option<String>,
    event_id: i64,
    user_pk: String,
    attribute_names: Vec<String>,
}

/// A relay-only daemon (polling every second, its log kept) on `db` and `temporal`, ready.
async fn ready_relay(db: &TestDb, temporal: &TemporalServer) -> RelayProcess {
    let relay = RelayProcess::spawn_logged(
        &db.url,
        &temporal.address(),
        &[
            ("TRIGGER_RELAY_POLL_INTERVAL", "1s"),
            ("TRIGGER_RELAY_MODE", "relay"),
        ],
    );
    relay.wait_ready().await;
    relay
}

async fn insert(db: &TestDb, event_id: i64, trigger_id: i64, user_pk: &str) -> i64 {
    db.connect()
        .await
        .query_one(
            "INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, context, due_at)
             VALUES ($1, $2, $3, '{}', now() + interval '1 hour') RETURNING id",
            &[&event_id, &trigger_id, &user_pk],
        )
        .await
        .expect("insert a row")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_is_found_by_trigger_and_user_and_its_memo_holds_the_firing() {
    let db = TestDb::create().await;
    // dj-triggers' table, as far as the daemon reads it, and the grant the add-on's
    // migration gives the daemon's role.
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE triggers_trigger (id bigint PRIMARY KEY, name varchar(64) NOT NULL);
             GRANT SELECT (id, name) ON triggers_trigger TO trigger_relay_daemon;",
        )
        .await
        .expect("create triggers_trigger");
    db.connect()
        .await
        .execute(
            "INSERT INTO triggers_trigger VALUES (7, $1), (9, $2)",
            &[&NAME, &QUOTED],
        )
        .await
        .expect("insert triggers");
    let found = insert(&db, 3, 7, "42").await;
    let other_user = insert(&db, 4, 7, "43").await;
    // Trigger 8 was deleted meanwhile: the workflow starts, without a name.
    let deleted_trigger = insert(&db, 5, 8, "42").await;
    // A user pk no index takes: the workflow starts, the memo keeps a cut copy.
    let huge_pk = "é".repeat(100_000);
    let huge = insert(&db, 6, 9, &huge_pk).await;

    let temporal = TemporalServer::start().await;
    let relay = ready_relay(&db, &temporal).await;
    db.wait_all_dispatched(Duration::from_secs(30)).await;
    let client = temporal.client().await;

    // A query by trigger and user (guarantees §6.6), through the client...
    let hits = listed(&client, "TriggerId = 7 AND UserPk = \"42\"", 1).await;
    let hit = &hits[0];
    assert_eq!(
        (
            hit.outbox_id,
            hit.trigger_id,
            hit.trigger_name.as_deref(),
            hit.event_id,
            hit.user_pk.as_str()
        ),
        (found, 7, Some(NAME), 3, "42")
    );
    let mut names = hit.attribute_names.clone();
    names.sort();
    assert_eq!(
        names,
        [
            "EventId",
            "TriggerId",
            "TriggerName",
            "TriggerRelayOutboxId",
            "UserPk"
        ]
    );
    // ... and through the CLI, as an operator types it.
    let out = output_within(
        {
            let mut cmd = Command::new(temporal_bin());
            cmd.args(["workflow", "list", "--address"])
                .arg(format!("127.0.0.1:{}", temporal.port))
                .args(["--query", "TriggerId = 7 AND UserPk = \"42\"", "-o", "json"]);
            cmd
        },
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "temporal workflow list: {out:?}");
    let listed_ids: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
        .iter()
        .map(|w| {
            w["execution"]["workflowId"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        listed_ids,
        std::slice::from_ref(&hit.workflow_id),
        "{stdout}"
    );

    // By name (quotes and unicode survive), by user, by outbox id.
    let by_name = listed(
        &client,
        &format!("TriggerName = '{}'", NAME.replace('\'', "\\'")),
        2,
    )
    .await;
    assert_eq!(
        by_name.iter().map(|l| l.outbox_id).collect::<Vec<_>>(),
        [found, other_user]
    );
    let by_user = listed(&client, "UserPk = \"42\"", 2).await;
    assert_eq!(
        by_user.iter().map(|l| l.outbox_id).collect::<Vec<_>>(),
        [found, deleted_trigger]
    );
    let gone = &by_user[1];
    assert_eq!((gone.trigger_id, gone.trigger_name.as_deref()), (8, None));
    assert!(!gone.attribute_names.iter().any(|n| n == "TriggerName"));

    let big = listed(&client, &format!("TriggerRelayOutboxId = {huge}"), 1).await;
    let big = &big[0];
    assert_eq!(
        (big.event_id, big.trigger_name.as_deref()),
        (6, Some(QUOTED))
    );
    assert!(big.attribute_names.iter().any(|n| n == "TriggerName"));
    assert!(
        big.user_pk.ends_with('…') && huge_pk.starts_with(big.user_pk.trim_end_matches('…')),
        "memo user_pk: {} bytes",
        big.user_pk.len()
    );
    assert!(!big.attribute_names.iter().any(|n| n == "UserPk"));

    let log = relay.log();
    assert!(log.contains("present: firings are findable"), "{log}");
    assert!(!log.contains("lacks the search attributes"), "{log}");
    drop(relay);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_attributes_workflows_start_with_the_memo_and_the_daemon_says_so() {
    // No triggers_trigger table either: names are left out, nothing else changes.
    let db = TestDb::create().await;
    let first = insert(&db, 3, 7, "42").await;
    let second = insert(&db, 4, 7, "43").await;
    let temporal = TemporalServer::start_without_search_attributes().await;
    let relay = ready_relay(&db, &temporal).await;
    db.wait_all_dispatched(Duration::from_secs(30)).await;
    assert_eq!(db.count("dispatched").await, 2);
    let client = temporal.client().await;
    let all = listed(&client, "WorkflowType = 'trigger_workflow'", 2).await;
    let got: Vec<_> = all
        .iter()
        .map(|l| {
            (
                l.outbox_id,
                l.trigger_id,
                l.trigger_name.clone(),
                l.event_id,
                l.user_pk.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (first, 7, None, 3, "42".to_owned()),
            (second, 7, None, 4, "43".to_owned())
        ]
    );
    assert!(all.iter().all(|l| l.attribute_names.is_empty()), "{all:?}");

    let log = relay.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lacks the search attributes"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    let line = lines[0];
    assert!(
        line.contains(
            "lacks the search attributes TriggerRelayOutboxId, TriggerId, TriggerName, EventId, UserPk"
        ) && line.contains(
            "temporal operator search-attribute create --namespace default \
             --name TriggerRelayOutboxId --type Int --name TriggerId --type Int"
        ),
        "{line}"
    );
    assert!(log.contains("cannot read trigger names"), "{log}");
    drop(relay);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attribute_removed_while_the_daemon_runs_is_dropped_after_one_refusal() {
    let db = TestDb::create().await;
    let temporal = TemporalServer::start().await;
    let relay = ready_relay(&db, &temporal).await;
    let before = insert(&db, 3, 7, "42").await;
    db.wait_all_dispatched(Duration::from_secs(30)).await;

    // The operator removes UserPk; the daemon still believes it present (checked at start).
    let out = output_within(
        {
            let mut cmd = Command::new(temporal_bin());
            cmd.args(["operator", "search-attribute", "remove", "--address"])
                .arg(format!("127.0.0.1:{}", temporal.port))
                .args(["--namespace", "default", "--name", "UserPk", "--yes"]);
            cmd
        },
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "remove UserPk: {out:?}");
    let after = insert(&db, 4, 7, "43").await;
    // Refused once for UserPk, the daemon checks again and starts the row without it.
    db.wait_all_dispatched(Duration::from_secs(30)).await;
    let client = temporal.client().await;
    let all = listed(&client, "WorkflowType = 'trigger_workflow'", 2).await;
    assert_eq!(
        all.iter().map(|l| l.outbox_id).collect::<Vec<_>>(),
        [before, after]
    );
    assert!(
        !all[1].attribute_names.iter().any(|n| n == "UserPk"),
        "{all:?}"
    );
    assert!(
        all[1].attribute_names.iter().any(|n| n == "TriggerId"),
        "{all:?}"
    );
    let log = relay.log();
    assert!(
        log.contains("lacks the search attributes UserPk"),
        "the daemon did not say UserPk went missing: {log}"
    );
    assert!(
        log.contains("no mapping defined for search attribute UserPk"),
        "no refusal seen: {log}"
    );
    drop(relay);
    db.drop_db().await;
}
