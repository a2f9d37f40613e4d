//! PostgreSQL over TLS (guarantees §4.9): the daemon honours libpq's `sslmode` (disable, prefer,
//! require, verify-ca, verify-full) and `sslrootcert` URL parameters. Each test runs its
//! own PostgreSQL 15 cluster that accepts TCP connections over TLS only, with a
//! certificate for `localhost` and 127.0.0.1 signed by a CA made for the test
//! (tests/common/tls_pg.rs).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::tls_pg::TlsPostgres;
use common::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `sslmode=verify-full` with the CA that signed the server's certificate: the daemon
/// becomes ready, listens, and relays rows, over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_over_verified_tls() {
    let pg = TlsPostgres::start().await;
    let temporal = TemporalServer::start().await;
    assert!(pg.db.url.contains("sslmode=verify-full"), "{}", pg.db.url);
    assert_eq!(
        pg.libpq_connect(&pg.db.url).as_deref(),
        Ok("t"),
        "libpq, same URL"
    );
    let relay = RelayProcess::spawn(
        &pg.db.url,
        &temporal.address(),
        &[("TRIGGER_RELAY_POLL_INTERVAL", "2s")],
    );
    relay.wait_ready().await;
    relay.wait_listening().await;

    pg.db.insert_rows(100).await;
    pg.db.wait_all_dispatched(Duration::from_secs(90)).await;
    assert_eq!(pg.db.count("dispatched").await, 100);
    let ids = wait_workflow_ids(&temporal.client().await, 100, Duration::from_secs(60)).await;
    assert_eq!(
        ids.len(),
        100,
        "Temporal has {} trigger workflows",
        ids.len()
    );
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        100,
        "a start doubled"
    );

    // Every connection the daemon holds is encrypted (pg_hba.conf allows nothing else, but
    // say so plainly) and logs in as the daemon's login.
    let client = pg.db.connect().await;
    let sessions: Vec<(String, bool)> = client
        .query(
            "SELECT a.usename::text, coalesce(s.ssl, false)
             FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname = current_database() AND a.usename = $1",
            &[&DAEMON_LOGIN],
        )
        .await
        .expect("the daemon's sessions")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(!sessions.is_empty(), "the daemon holds no connection");
    assert!(
        sessions
            .iter()
            .all(|(user, ssl)| user == DAEMON_LOGIN && *ssl),
        "{sessions:?}"
    );
}

/// `sslrootcert` naming a CA that did not sign the server's certificate: the command fails,
/// says which file it verified against, and does not print the URL's password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_is_refused_with_the_file_named_and_no_password() {
    let pg = TlsPostgres::start().await;
    let wrong_ca = pg.wrong_ca_cert.display().to_string();
    // Trust authentication ignores the password; it is there to be kept out of messages.
    let url = pg.url(
        "localhost",
        &format!("{DAEMON_LOGIN}:s3cret"),
        &format!("sslmode=verify-full&sslrootcert={wrong_ca}"),
    );
    let libpq = pg.libpq_connect(&url);
    assert!(
        libpq
            .as_ref()
            .is_err_and(|e| e.contains("certificate verify failed")),
        "libpq, same URL: {libpq:?}"
    );
    let out = relay_cli(&url, &["status"]);
    let err = stderr(&out);
    eprintln!("status with the wrong CA: {}\n{err}", out.status);
    assert!(!out.status.success(), "status succeeded with the wrong CA");
    assert!(
        err.contains(&wrong_ca),
        "stderr does not name the sslrootcert file {wrong_ca}:\n{err}"
    );
    assert!(!err.contains("s3cret"), "stderr shows the password:\n{err}");

    // The daemon refuses the same way (it does not become ready, and it does not leak the
    // password in its logs either).
    let mut cmd = std::process::Command::new(relay_bin());
    cmd.args(["run", "--mode", "relay"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TRIGGER_RELAY_DATABASE_URL", &url)
        .env("TRIGGER_RELAY_TEMPORAL_ADDRESS", "http://127.0.0.1:1")
        .env(
            "TRIGGER_RELAY_METRICS_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("TRIGGER_RELAY_LOG_FORMAT", "text")
        .env("TRIGGER_RELAY_BACKOFF_MAX", "1s");
    let mut child = KillOnDrop(
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn trigger-relay run"),
    );
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr_pipe = child.0.stderr.take().expect("stderr");
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                let mut log = log.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    wait_for(
        "the daemon to report the certificate failure (naming the sslrootcert file) or exit",
        Duration::from_secs(30),
        || {
            let named = log.lock().expect("log").contains(&wrong_ca);
            let exited = child.0.try_wait().expect("try_wait").is_some();
            async move { (named || exited).then_some(()) }
        },
    )
    .await;
    drop(child);
    reader.join().expect("stderr reader");
    let log = log.lock().expect("log").clone();
    eprintln!("trigger-relay run with the wrong CA:\n{log}");
    assert!(
        log.contains(&wrong_ca),
        "the daemon's log does not name the sslrootcert file {wrong_ca}:\n{log}"
    );
    assert!(
        !log.contains("s3cret"),
        "the daemon logs the password:\n{log}"
    );
}

/// `sslmode=disable` against a server that accepts TLS only: refused by pg_hba.conf, and
/// the message says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_refused_by_a_tls_only_server() {
    let pg = TlsPostgres::start().await;
    let url = pg.url("localhost", DAEMON_LOGIN, "sslmode=disable");
    let libpq = pg.libpq_connect(&url);
    assert!(
        libpq.as_ref().is_err_and(|e| e.contains("no encryption")),
        "libpq, same URL: {libpq:?}"
    );
    let out = relay_cli(&url, &["status"]);
    let err = stderr(&out);
    eprintln!("status with sslmode=disable: {}\n{err}", out.status);
    assert!(!out.status.success(), "a plaintext connection was accepted");
    assert!(
        err.contains("pg_hba.conf") && err.contains("no encryption"),
        "stderr does not carry the server's refusal:\n{err}"
    );
}

/// The other modes that must reach this server: `verify-ca` (the CA is checked, the host
/// name is not; here the URL names the address 127.0.0.1), `require` (encrypted, nothing
/// verified) and `prefer` (TLS first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_require_and_prefer_connect() {
    let pg = TlsPostgres::start().await;
    pg.db.insert_rows(7).await;
    let ca = pg.ca_cert.display().to_string();
    for (host, params) in [
        ("127.0.0.1", format!("sslmode=verify-ca&sslrootcert={ca}")),
        ("localhost", format!("sslmode=verify-ca&sslrootcert={ca}")),
        ("localhost", "sslmode=require".to_owned()),
        ("127.0.0.1", "sslmode=prefer".to_owned()),
    ] {
        let url = pg.url(host, DAEMON_LOGIN, &params);
        assert_eq!(pg.libpq_connect(&url).as_deref(), Ok("t"), "libpq: {url}");
        let out = relay_cli(&url, &["status", "--json"]);
        assert!(
            out.status.success(),
            "status with {host} and {params} failed:\n{}",
            stderr(&out)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
        assert_eq!(doc["backlog"], 7, "{host} {params}: {doc}");
    }
}
