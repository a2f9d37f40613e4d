//! Least privilege (guarantees §1.1, §8.1, README "Database role"): the daemon and its commands
//! run as a plain login whose only privileges come from `trigger_relay_daemon`, the role
//! sql/schema/ creates and grants. The harness gives every test's daemon that login
//! (`TestDb::url`); this file checks that it really is that login, that the login holds nothing
//! more, and that each command the daemon offers works with it.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_and_commands_run_as_the_least_privileged_login() {
    let db = TestDb::create().await;
    let pg = db.connect().await;

    // The login: no attribute beyond LOGIN, a member of trigger_relay_daemon only.
    let row = pg
        .query_one(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication,
                    ARRAY(SELECT r.rolname::text FROM pg_auth_members m
                          JOIN pg_roles r ON r.oid = m.roleid
                          WHERE m.member = u.oid ORDER BY 1)
             FROM pg_roles u WHERE rolname = $1",
            &[&DAEMON_LOGIN],
        )
        .await
        .expect("the daemon's login");
    for (i, attribute) in [
        "superuser",
        "createrole",
        "createdb",
        "bypassrls",
        "replication",
    ]
    .iter()
    .enumerate()
    {
        assert!(!row.get::<_, bool>(i), "{DAEMON_LOGIN} has {attribute}");
    }
    let memberships: Vec<String> = row.get(5);
    assert_eq!(memberships, ["trigger_relay_daemon"]);

    // The daemon: relays as that login.
    let temporal = TemporalServer::start().await;
    let relay = RelayProcess::spawn(
        &db.url,
        &temporal.address(),
        &[("TRIGGER_RELAY_POLL_INTERVAL", "1s")],
    );
    relay.wait_ready().await;
    let ids = db.insert_rows(5).await;
    db.wait_all_dispatched(Duration::from_secs(30)).await;
    assert_eq!(db.count("dispatched").await, 5);
    // Other sessions of the test itself (the superuser, no application name) may linger
    // for a moment after their client is dropped; the daemon's are named trigger-relay.
    let sessions: Vec<(String, String)> = pg
        .query(
            "SELECT usename::text, application_name FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND backend_type = 'client backend'",
            &[],
        )
        .await
        .expect("the daemon's sessions")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        sessions.iter().any(|(user, _)| user == DAEMON_LOGIN),
        "no session of {DAEMON_LOGIN}: {sessions:?}"
    );
    assert!(
        sessions
            .iter()
            .all(|(user, app)| user == DAEMON_LOGIN || !app.starts_with("trigger-relay")),
        "the daemon logs in as someone else: {sessions:?}"
    );
    drop(relay);

    // The commands, as the same login.
    let ok = |args: &[&str]| {
        let out = relay_cli(&db.url, args);
        assert!(
            out.status.success(),
            "trigger-relay {} as {DAEMON_LOGIN}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["status"]);
    let replay = ok(&[
        "replay",
        "--id",
        &ids[0].to_string(),
        "--include-dispatched",
    ]);
    assert!(replay.contains("replayed 1 row(s)"), "{replay}");
    // A pending row (no daemon runs now) cancelled by hand: no Temporal call needed.
    let pending = db.insert_rows(1).await;
    let cancel_dry = ok(&["cancel", "--id", &pending[0].to_string(), "--dry-run"]);
    assert!(cancel_dry.contains(&pending[0].to_string()), "{cancel_dry}");
    ok(&["cancel", "--id", &pending[0].to_string()]);
    assert_eq!(db.state_of(pending[0]).await, "cancelled");
    db.drop_db().await;
}

/// The role may move a row through its lifecycle, never change what the row fires: the
/// Python worker performs `event.handle(row.user_pk, **row.context)` from the row, so a write
/// of these columns with stolen relay credentials would make the site act for anyone
/// (README, "Security model"; sql/schema/0007_column_grants.sql). Each refused write is
/// tried on its own, as the daemon's login, and every lifecycle column it writes is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_login_cannot_change_what_a_row_fires() {
    let db = TestDb::create().await;
    let ids = db.insert_rows(1).await;
    let id = ids[0];
    let daemon = connect(&db.url).await;
    let refused = [
        "UPDATE trigger_relay_outbox SET user_pk = '1' WHERE id = $1",
        "UPDATE trigger_relay_outbox SET trigger_id = 99 WHERE id = $1",
        "UPDATE trigger_relay_outbox SET event_id = 99 WHERE id = $1",
        "UPDATE trigger_relay_outbox SET context = '{\"admin\": true}' WHERE id = $1",
        "UPDATE trigger_relay_outbox SET due_at = now() WHERE id = $1",
        "UPDATE trigger_relay_outbox SET created_at = now() WHERE id = $1",
        "UPDATE trigger_relay_outbox SET id = id + 1000 WHERE id = $1",
        "INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, due_at)
         SELECT 1, 1, '1', now() WHERE $1::bigint IS NOT NULL",
        "SELECT outbox_id FROM trigger_relay_action_ledger WHERE outbox_id = $1",
        "UPDATE trigger_relay_site SET id = gen_random_uuid() WHERE $1::bigint IS NOT NULL",
    ];
    for statement in refused {
        let error = daemon
            .execute(statement, &[&id])
            .await
            .expect_err(statement);
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{statement}: {error}"
        );
    }
    // What the daemon's statements write (sql/queries/), all at once.
    let written = daemon
        .execute(
            "UPDATE trigger_relay_outbox
             SET state = 'pending', skip_reason = NULL, attempts = attempts + 1,
                 last_error = 'x', claimed_by = 'r', claimed_until = now(),
                 dispatched_at = NULL, finished_at = NULL, replayed_at = now(),
                 workflow_id = 'w', run_id = NULL, generation = generation + 1,
                 firing_uuid = coalesce(firing_uuid, gen_random_uuid())
             WHERE id = $1",
            &[&id],
        )
        .await
        .expect("the lifecycle columns");
    assert_eq!(written, 1);
    let site: String = daemon
        .query_one("SELECT id::text FROM trigger_relay_site", &[])
        .await
        .expect("the site identity")
        .get(0);
    assert_eq!(site.len(), 36, "{site}");
    db.drop_db().await;
}

/// Retention deletes finished rows with their ledger rows (ON DELETE CASCADE), although the
/// role no longer reads the ledger: PostgreSQL runs the cascade with the ledger owner's
/// rights. Through the daemon's own command-line path, as its login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_ledger_rows_without_reading_the_ledger() {
    let db = TestDb::create().await;
    let pg = db.connect().await;
    let id: i64 = pg
        .query_one(
            "INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, due_at, state,
                                               finished_at)
             VALUES (1, 1, '7', now(), 'done', now() - interval '40 days') RETURNING id",
            &[],
        )
        .await
        .expect("a finished row")
        .get(0);
    pg.execute(
        "INSERT INTO trigger_relay_action_ledger (outbox_id, action_id, generation,
                                                  idempotency_key)
         VALUES ($1, 1, 0, 'k')",
        &[&id],
    )
    .await
    .expect("its ledger row");
    let temporal = TemporalServer::start().await;
    let relay = RelayProcess::spawn(
        &db.url,
        &temporal.address(),
        &[
            ("TRIGGER_RELAY_RETENTION", "30d"),
            ("TRIGGER_RELAY_RETENTION_INTERVAL", "1s"),
        ],
    );
    relay.wait_ready().await;
    wait_for(
        "retention deleted the row",
        Duration::from_secs(30),
        || async {
            let left: i64 = pg
                .query_one(
                    "SELECT (SELECT count(*) FROM trigger_relay_outbox)
                      + (SELECT count(*) FROM trigger_relay_action_ledger)",
                    &[],
                )
                .await
                .expect("count")
                .get(0);
            (left == 0).then_some(())
        },
    )
    .await;
    assert_eq!(
        relay.metric("trigger_relay_retention_deleted_total").await,
        1.0
    );
    drop(relay);
    db.drop_db().await;
}

/// One `trigger_relay_daemon` role serves every database of a cluster, and `CONNECT` is
/// granted to `PUBLIC` by default: another site's relay login (staging's) reaches this
/// site's outbox with the same privileges. The README's "Security model" SQL, run as it is
/// written there (database and login names put in), shuts it out and keeps this site's
/// relay login in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_connect_keeps_another_sites_relay_login_out() {
    const PRODUCTION_RELAY: &str = "trigger_relay_test_production_relay";
    let production = TestDb::create().await;
    let staging_login = production.url.clone(); // DAEMON_LOGIN: a member of the role
    let admin = connect(&production.admin_url).await;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PRODUCTION_RELAY}') THEN
                     CREATE ROLE {PRODUCTION_RELAY} LOGIN IN ROLE trigger_relay_daemon;
                 END IF;
             END $$"
        ))
        .await
        .expect("production's relay login");
    let ids = production.insert_rows(1).await;

    // By default, staging's relay login moves production's rows.
    let reached = connect(&staging_login)
        .await
        .execute(
            "UPDATE trigger_relay_outbox SET state = 'cancelled' WHERE id = $1",
            &[&ids[0]],
        )
        .await
        .expect("the default lets another site's login in");
    assert_eq!(reached, 1);

    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let sql = readme
        .split("```sql")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("REVOKE CONNECT"))
        .expect("the README's REVOKE CONNECT block")
        .replace("production_site, production_relay", PRODUCTION_RELAY)
        .replace(
            "DATABASE production",
            &format!("DATABASE {}", production.name),
        );
    admin.batch_execute(&sql).await.expect("the README's SQL");

    let refused = tokio_postgres::connect(&staging_login, tokio_postgres::NoTls)
        .await
        .err()
        .expect("staging's relay login is refused");
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{refused}"
    );
    let own = production.url.replace(DAEMON_LOGIN, PRODUCTION_RELAY);
    let rows: i64 = connect(&own)
        .await
        .query_one("SELECT count(*) FROM trigger_relay_outbox", &[])
        .await
        .expect("production's relay login still reads its outbox")
        .get(0);
    assert_eq!(rows, 1);
    production.drop_db().await;
}
