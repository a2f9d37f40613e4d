//! Least privilege (SPEC §1.1, README "Database role"): the daemon and its commands run as
//! a plain login whose only privileges come from `trigger_relay_daemon`, the role
//! sql/schema/ creates and grants. The harness gives every test's daemon that login
//! (`TestDb::url`); this file checks that it really is that login, that the login holds
//! nothing more, and that each command the daemon offers works with it.

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
