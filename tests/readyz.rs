//! `/readyz` answers whoever reaches the metrics port: it names each dependency and its
//! state, never the error's text (hosts, users, databases, certificate paths), which goes
//! to the log instead (docs/contract.md, "Daemon metrics").

mod common;

use std::time::Duration;

use common::{RelayProcess, TestDb, free_port, wait_for};

/// The CA bundle of the machine: a readable PEM file, so the daemon starts and names it.
const CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Every string value of `doc`: the body has none, its names are keys and its states
/// booleans and numbers, so no error text can hide in it.
fn strings_in(doc: &serde_json::Value) -> Vec<String> {
    match doc {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items.iter().flat_map(strings_in).collect(),
        serde_json::Value::Object(map) => map.values().flat_map(strings_in).collect(),
        _ => Vec::new(),
    }
}

async fn not_ready_body(relay: &RelayProcess, what: &str) -> serde_json::Value {
    let body = wait_for(what, Duration::from_secs(30), || async {
        match relay.get("/readyz").await {
            Some((503, body)) => Some(body),
            _ => None,
        }
    })
    .await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/readyz body {body:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_states_and_the_log_has_the_detail() {
    assert!(std::path::Path::new(CA_FILE).is_file(), "{CA_FILE} missing");
    // PostgreSQL refuses the login: its error names the user, the database, the host and
    // the CA file.
    let user = "readyz_secret_user_4711";
    let database = "readyz_secret_db_4712";
    let url =
        format!("postgres://{user}@127.0.0.1:5432/{database}?sslmode=prefer&sslrootcert={CA_FILE}");
    let relay = RelayProcess::spawn_logged(&url, "http://127.0.0.1:1", &[]);
    let doc = not_ready_body(&relay, "/readyz 503 while the login is refused").await;
    let log = wait_for(
        "the log to name the refused login",
        Duration::from_secs(15),
        || async {
            let log = relay.log();
            log.contains(user).then_some(log)
        },
    )
    .await;
    let body = doc.to_string();
    assert_eq!(doc["ready"], false, "{body}");
    assert_eq!(doc["postgres"], false, "{body}");
    assert_eq!(doc["dependencies"]["postgres"]["ok"], false, "{body}");
    for detail in [
        user,
        database,
        "127.0.0.1",
        CA_FILE,
        "sslrootcert",
        "does not exist",
    ] {
        assert!(!body.contains(detail), "/readyz shows {detail:?}: {body}");
    }
    assert_eq!(strings_in(&doc), Vec::<String>::new(), "{body}");
    assert!(log.contains(database) && log.contains(CA_FILE), "{log}");
    drop(relay);

    // Temporal unreachable at a port only its error would name.
    let db = TestDb::create().await;
    let port = free_port();
    let address = format!("http://127.0.0.1:{port}");
    let relay = RelayProcess::spawn_logged(&db.url, &address, &[]);
    let doc = not_ready_body(&relay, "/readyz 503 while Temporal is unreachable").await;
    let body = doc.to_string();
    assert_eq!(doc["temporal"], false, "{body}");
    assert_eq!(doc["dependencies"]["temporal"]["ok"], false, "{body}");
    assert_eq!(strings_in(&doc), Vec::<String>::new(), "{body}");
    let log = wait_for(
        "the log to name Temporal's address",
        Duration::from_secs(15),
        || async {
            let log = relay.log();
            log.contains(&port.to_string()).then_some(log)
        },
    )
    .await;
    assert!(log.contains("cannot connect to Temporal"), "{log}");
    drop(relay);
    db.drop_db().await;
}
