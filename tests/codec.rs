//! Payload encryption and the codec endpoint (src/codec/; docs/operations.md, "Encrypting
//! payloads"), with the real daemon on a real dev server: the stored history holds no
//! plaintext context or user pk, the memo is encrypted and, with
//! TRIGGER_RELAY_VISIBILITY_PERSONAL_DATA=false, the search attributes and the summary carry
//! ids only; `temporal workflow show --codec-endpoint` (Temporal's own CLI) reads the
//! payloads through the daemon's endpoint, which refuses a missing or wrong token and a
//! foreign origin; and a malformed key configuration stops the daemon at start.
//!
//! Both workers decrypting and a firing performed end to end, and key rotation across
//! restarts, are django-trigger-relay/tests/test_e2e_codec.py's (they need the Python worker).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use prost::Message;
use temporalio_client::{WorkflowExecutionInfo, WorkflowFetchHistoryOptions};
use temporalio_common::protos::temporal::api::common::v1::Payload;
use temporalio_common::protos::temporal::api::history::v1::HistoryEvent;
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use trigger_relay::codec;

/// 32 × 0x01 and 32 × 0x02, base64.
const KEY_A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const KEY_B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
const TOKEN: &str = "test-token-0123456789abcdef";
const UI_ORIGIN: &str = "http://ui.example:8233";
const USER_PK: &str = "user-secret-77";
const CONTEXT_MARKER: &str = "context-secret-42";

/// A directory of this test's files (keys, token), removed on drop.
struct Files(PathBuf);

impl Files {
    fn new(name: &str) -> Files {
        let dir = std::env::temp_dir().join(format!(
            "trigger-relay-codec-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("create the test's directory");
        Files(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a test file");
        path.display().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn insert_row(db: &TestDb) -> i64 {
    // Due in an hour: the workflow waits on its timer, no Python worker is needed.
    db.connect()
        .await
        .query_one(
            "INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, context, due_at)
             VALUES (3, 7, $1, jsonb_build_object('note', $2::text), now() + interval '1 hour')
             RETURNING id",
            &[&USER_PK, &CONTEXT_MARKER],
        )
        .await
        .expect("insert a row")
        .get(0)
}

async fn wait_workflow_id(db: &TestDb, id: i64) -> String {
    wait_for("the row's workflow id", Duration::from_secs(30), || async {
        db.connect()
            .await
            .query_one(
                "SELECT workflow_id FROM trigger_relay_outbox WHERE id = $1 AND run_id IS NOT NULL",
                &[&id],
            )
            .await
            .ok()
            .and_then(|row| row.try_get::<_, String>(0).ok())
    })
    .await
}

/// The history as the server stores it, fetched without any codec.
async fn raw_history(temporal: &TemporalServer, workflow_id: &str) -> Vec<HistoryEvent> {
    WorkflowExecutionInfo::builder()
        .namespace("default".to_owned())
        .workflow_id(workflow_id.to_owned())
        .build()
        .bind_untyped(temporal.client().await)
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .into_events()
        .await
        .expect("fetch history")
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

fn temporal_cli(temporal: &TemporalServer, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(temporal_bin());
    cmd.args(args)
        .args(["--address", &format!("127.0.0.1:{}", temporal.port)]);
    output_within(cmd, Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_is_encrypted_and_readable_through_the_codec_endpoint() {
    let files = Files::new("endpoint");
    let keys = files.write("keys", &format!("# test keys\na={KEY_A}\nb={KEY_B}\n"));
    let token = files.write("token", &format!("{TOKEN}\n"));
    let temporal = TemporalServer::start().await;
    let db = TestDb::create().await;
    let id = insert_row(&db).await;
    let relay = RelayProcess::spawn_logged(
        &db.url,
        &temporal.address(),
        &[
            ("TRIGGER_RELAY_POLL_INTERVAL", "1s"),
            ("TRIGGER_RELAY_MODE", "relay"),
            ("TRIGGER_RELAY_CODEC_KEYS_FILE", &keys),
            ("TRIGGER_RELAY_CODEC_CURRENT_KEY_ID", "b"),
            ("TRIGGER_RELAY_CODEC_SERVER_TOKEN_FILE", &token),
            ("TRIGGER_RELAY_CODEC_CORS_ORIGIN", UI_ORIGIN),
            ("TRIGGER_RELAY_VISIBILITY_PERSONAL_DATA", "false"),
        ],
    );
    relay.wait_ready().await;
    let workflow_id = wait_workflow_id(&db, id).await;

    // What Temporal stores: no user pk and no context anywhere, in any field.
    let history = raw_history(&temporal, &workflow_id).await;
    for event in &history {
        let bytes = event.encode_to_vec();
        assert!(!contains(&bytes, USER_PK), "{event:?}");
        assert!(!contains(&bytes, CONTEXT_MARKER), "{event:?}");
    }
    let started = history
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) => Some(a.clone()),
            _ => None,
        })
        .expect("a started event");
    let input = started
        .input
        .as_ref()
        .and_then(|p| p.payloads.first())
        .expect("an input");
    assert!(codec::is_encrypted(input), "{input:?}");
    assert_eq!(
        input.metadata.get(codec::KEY_ID).map(Vec::as_slice),
        Some(&b"b"[..])
    );
    let memo = started.memo.as_ref().expect("a memo");
    let mut memo_keys: Vec<&str> = memo.fields.keys().map(String::as_str).collect();
    memo_keys.sort();
    assert_eq!(memo_keys, ["event_id", "outbox_id", "trigger_id"]);
    assert!(memo.fields.values().all(codec::is_encrypted), "{memo:?}");
    let attributes = started
        .search_attributes
        .as_ref()
        .expect("search attributes");
    let mut names: Vec<&str> = attributes
        .indexed_fields
        .keys()
        .map(String::as_str)
        .collect();
    names.sort();
    assert_eq!(names, ["EventId", "TriggerId", "TriggerRelayOutboxId"]);

    // Temporal's CLI, without and with the daemon's codec endpoint.
    let endpoint = format!("http://127.0.0.1:{}/codec", relay.metrics_port);
    let show = [
        "workflow",
        "show",
        "--workflow-id",
        &workflow_id,
        "--output",
        "json",
    ];
    let bearer = format!("Bearer {TOKEN}");
    let (encoding, _) = cli_input(&temporal, &show);
    assert_eq!(encoding, "binary/encrypted");
    let (encoding, input_json) = cli_input(
        &temporal,
        &[
            &show[..],
            &["--codec-endpoint", &endpoint, "--codec-auth", &bearer],
        ]
        .concat(),
    );
    assert_eq!(encoding, "json/plain");
    assert!(input_json.contains(CONTEXT_MARKER), "{input_json}");
    assert!(
        input_json.contains(USER_PK),
        "the input has the user pk: {input_json}"
    );
    let refused = temporal_cli(
        &temporal,
        &[
            &show[..],
            &[
                "--codec-endpoint",
                &endpoint,
                "--codec-auth",
                "Bearer wrong-token-0123456789",
            ],
        ]
        .concat(),
    );
    assert!(!refused.status.success(), "{refused:?}");

    // The endpoint itself, as the UI calls it.
    let http = reqwest::Client::new();
    let body = serde_json::json!({
        "payloads": [payload_json(input)],
    });
    let decode = |origin: Option<&str>, auth: Option<&str>| {
        let mut request = http
            .post(format!("{endpoint}/decode"))
            .header("Content-Type", "application/json")
            .header("X-Namespace", "default")
            .body(body.to_string());
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        request.send()
    };
    let ok = decode(None, Some(&bearer)).await.expect("decode");
    assert_eq!(ok.status(), 200);
    let answer: serde_json::Value = ok.json().await.expect("JSON");
    let data = answer["payloads"][0]["data"].as_str().unwrap_or_default();
    let input_json = String::from_utf8(base64_decode(data)).expect("UTF-8");
    assert!(
        input_json.contains(CONTEXT_MARKER) && input_json.contains(USER_PK),
        "{input_json}"
    );
    assert_eq!(
        answer["payloads"][0]["metadata"]["encoding"],
        "anNvbi9wbGFpbg=="
    );

    let missing = decode(None, None).await.expect("decode");
    assert_eq!(missing.status(), 401);
    assert!(missing.headers().contains_key("www-authenticate"));
    let wrong = decode(None, Some("Bearer wrong-token-0123456789"))
        .await
        .expect("decode");
    assert_eq!(wrong.status(), 403);
    let foreign = decode(Some("https://evil.example"), Some(&bearer))
        .await
        .expect("decode");
    assert_eq!(foreign.status(), 403);
    assert!(
        !foreign
            .headers()
            .contains_key("access-control-allow-origin")
    );
    let from_ui = decode(Some(UI_ORIGIN), Some(&bearer))
        .await
        .expect("decode");
    assert_eq!(from_ui.status(), 200);
    assert_eq!(from_ui.headers()["access-control-allow-origin"], UI_ORIGIN);
    assert_eq!(
        from_ui.headers()["access-control-allow-credentials"],
        "true"
    );
    let ui_unauthorised = decode(Some(UI_ORIGIN), None).await.expect("decode");
    assert_eq!(ui_unauthorised.status(), 401);
    assert_eq!(
        ui_unauthorised.headers()["access-control-allow-origin"],
        UI_ORIGIN,
        "the UI can read why"
    );

    let preflight = |origin: &str| {
        http.request(reqwest::Method::OPTIONS, format!("{endpoint}/decode"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type,x-namespace",
            )
            .send()
    };
    let allowed = preflight(UI_ORIGIN).await.expect("preflight");
    assert_eq!(allowed.status(), 204);
    assert_eq!(allowed.headers()["access-control-allow-origin"], UI_ORIGIN);
    let allowed_headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    for needed in ["authorization", "content-type", "x-namespace"] {
        assert!(allowed_headers.contains(needed), "{allowed_headers}");
    }
    assert_eq!(
        preflight("https://evil.example")
            .await
            .expect("preflight")
            .status(),
        403
    );

    // Encode answers with the current key; decode takes it back; unknown keys are named.
    let plain_payload = Payload {
        metadata: [("encoding".to_owned(), b"json/plain".to_vec())].into(),
        data: b"\"hello\"".to_vec(),
        ..Default::default()
    };
    let encoded: serde_json::Value = http
        .post(format!("{endpoint}/encode"))
        .header("Authorization", &bearer)
        .body(serde_json::json!({"payloads": [payload_json(&plain_payload)]}).to_string())
        .send()
        .await
        .expect("encode")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        encoded["payloads"][0]["metadata"]["encryption-key-id"],
        "Yg=="
    );
    let round_trip: serde_json::Value = http
        .post(format!("{endpoint}/decode"))
        .header("Authorization", &bearer)
        .body(encoded.to_string())
        .send()
        .await
        .expect("decode")
        .json()
        .await
        .expect("JSON");
    assert_eq!(round_trip["payloads"][0]["data"], "ImhlbGxvIg==");
    let mut unknown = encoded.clone();
    unknown["payloads"][0]["metadata"]["encryption-key-id"] = "eg==".into(); // "z"
    let refused = http
        .post(format!("{endpoint}/decode"))
        .header("Authorization", &bearer)
        .body(unknown.to_string())
        .send()
        .await
        .expect("decode");
    assert_eq!(refused.status(), 400);
    let why = refused.text().await.unwrap_or_default();
    assert!(
        why.contains("key id \"z\", which is not configured (keys: a, b)"),
        "{why}"
    );
    let not_json = http
        .post(format!("{endpoint}/decode"))
        .header("Authorization", &bearer)
        .body("{")
        .send()
        .await
        .expect("decode");
    assert_eq!(not_json.status(), 400);
    let get = http
        .get(format!("{endpoint}/decode"))
        .send()
        .await
        .expect("get");
    assert_eq!(get.status(), 405);
    assert!(!relay.log().contains(KEY_A) && !relay.log().contains(TOKEN));
}

/// With encryption on and the default visibility, the memo is encrypted but the search
/// attributes keep the user pk (they cannot be encrypted), and the daemon says so at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_visibility_option_search_attributes_keep_the_user_pk() {
    let files = Files::new("default-visibility");
    let keys = files.write("keys", &format!("a={KEY_A}\n"));
    let temporal = TemporalServer::start().await;
    let db = TestDb::create().await;
    let id = insert_row(&db).await;
    let relay = RelayProcess::spawn_logged(
        &db.url,
        &temporal.address(),
        &[
            ("TRIGGER_RELAY_POLL_INTERVAL", "1s"),
            ("TRIGGER_RELAY_MODE", "relay"),
            ("TRIGGER_RELAY_CODEC_KEYS_FILE", &keys),
            ("TRIGGER_RELAY_CODEC_CURRENT_KEY_ID", "a"),
        ],
    );
    relay.wait_ready().await;
    let workflow_id = wait_workflow_id(&db, id).await;
    let started = raw_history(&temporal, &workflow_id)
        .await
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("a started event");
    let memo = started.memo.expect("a memo");
    assert!(memo.fields.contains_key("user_pk"));
    assert!(memo.fields.values().all(codec::is_encrypted));
    let user_pk = started
        .search_attributes
        .and_then(|a| a.indexed_fields.get("UserPk").cloned())
        .expect("UserPk");
    assert_eq!(user_pk.data, format!("\"{USER_PK}\"").into_bytes());
    assert!(
        relay
            .log()
            .contains("TRIGGER_RELAY_VISIBILITY_PERSONAL_DATA=false keeps them out")
    );
    // No endpoint without a token.
    assert_eq!(
        relay.get("/codec/decode").await.map(|(code, _)| code),
        Some(404)
    );
}

#[test]
fn a_malformed_key_configuration_stops_the_daemon_at_start() {
    let files = Files::new("refusals");
    let good = files.write("good", &format!("a={KEY_A}\n"));
    let short = files.write("short", "a=AQEBAQEBAQEBAQEBAQEBAQ==\n");
    let no_equals = files.write("no-equals", &format!("# a comment\n{KEY_A}\n"));
    let not_base64 = files.write("not-base64", "a=this is no key\n");
    let short_token = files.write("short-token", "abc\n");
    let token = files.write("token", TOKEN);
    let missing = files.0.join("missing").display().to_string();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![
                ("TRIGGER_RELAY_CODEC_KEYS_FILE", &short),
                ("TRIGGER_RELAY_CODEC_CURRENT_KEY_ID", "a"),
            ],
            "line 1: the key of \"a\" is 16 bytes; AES-256-GCM takes 32",
        ),
        (
            vec![
                ("TRIGGER_RELAY_CODEC_KEYS_FILE", &no_equals),
                ("TRIGGER_RELAY_CODEC_CURRENT_KEY_ID", "a"),
            ],
            "line 2: not `<key id>=<base64 of 32 bytes>`",
        ),
        (
            vec![
                ("TRIGGER_RELAY_CODEC_KEYS_FILE", &not_base64),
                ("TRIGGER_RELAY_CODEC_CURRENT_KEY_ID", "a"),
            ],
            "line 1: the key is not base64",
        ),
        (
            vec![
                ("TRIGGER_RELAY_CODEC_KEYS_FILE", &good),
                ("TRIGGER_RELAY_CODEC_CURRENT_KEY_ID", "b"),
            ],
            "TRIGGER_RELAY_CODEC_CURRENT_KEY_ID=\"b\" names no key of",
        ),
        (
            vec![("TRIGGER_RELAY_CODEC_KEYS_FILE", &good)],
            "TRIGGER_RELAY_CODEC_CURRENT_KEY_ID is not",
        ),
        (
            vec![("TRIGGER_RELAY_CODEC_CURRENT_KEY_ID", "a")],
            "TRIGGER_RELAY_CODEC_KEYS_FILE is not",
        ),
        (
            vec![
                ("TRIGGER_RELAY_CODEC_KEYS_FILE", &missing),
                ("TRIGGER_RELAY_CODEC_CURRENT_KEY_ID", "a"),
            ],
            "cannot read TRIGGER_RELAY_CODEC_KEYS_FILE",
        ),
        (
            vec![("TRIGGER_RELAY_CODEC_SERVER_TOKEN_FILE", &token)],
            "the codec endpoint has no key to use",
        ),
        (
            vec![
                ("TRIGGER_RELAY_CODEC_KEYS_FILE", &good),
                ("TRIGGER_RELAY_CODEC_CURRENT_KEY_ID", "a"),
                ("TRIGGER_RELAY_CODEC_SERVER_TOKEN_FILE", &short_token),
            ],
            "the token must be at least 16",
        ),
        (
            vec![("TRIGGER_RELAY_CODEC_CORS_ORIGIN", UI_ORIGIN)],
            "TRIGGER_RELAY_CODEC_CORS_ORIGIN is set but TRIGGER_RELAY_CODEC_SERVER_TOKEN_FILE is not",
        ),
        (
            vec![
                ("TRIGGER_RELAY_CODEC_KEYS_FILE", &good),
                ("TRIGGER_RELAY_CODEC_CURRENT_KEY_ID", "a"),
                ("TRIGGER_RELAY_CODEC_SERVER_TOKEN_FILE", &token),
                (
                    "TRIGGER_RELAY_CODEC_CORS_ORIGIN",
                    "https://ui.example/namespaces",
                ),
            ],
            "is not an origin",
        ),
    ];
    for (env, expected) in cases {
        let output = relay_run_output(&env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{env:?} started: {stderr}");
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
        assert!(
            !stderr.contains("AQEBAQEB") && !stderr.contains(TOKEN),
            "{stderr}"
        );
    }
    // The settings are documented where operators look (clap's `env`).
    let help = relay_cli_env(&["run", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for variable in [
        "TRIGGER_RELAY_CODEC_KEYS_FILE",
        "TRIGGER_RELAY_CODEC_CURRENT_KEY_ID",
        "TRIGGER_RELAY_CODEC_SERVER_TOKEN_FILE",
        "TRIGGER_RELAY_CODEC_CORS_ORIGIN",
        "TRIGGER_RELAY_VISIBILITY_PERSONAL_DATA",
    ] {
        assert!(help.contains(variable), "{variable} not in run --help");
    }
}

/// `temporal workflow show --output json` with `args`: the encoding and the text of the
/// workflow's input as the CLI prints it.
fn cli_input(temporal: &TemporalServer, args: &[&str]) -> (String, String) {
    let output = temporal_cli(temporal, args);
    assert!(output.status.success(), "{output:?}");
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let input =
        &shown["events"][0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0];
    let text = |value: &serde_json::Value| {
        String::from_utf8_lossy(&base64_decode(value.as_str().unwrap_or_default())).into_owned()
    };
    (text(&input["metadata"]["encoding"]), text(&input["data"]))
}

fn payload_json(payload: &Payload) -> serde_json::Value {
    let metadata: serde_json::Map<String, serde_json::Value> = payload
        .metadata
        .iter()
        .map(|(key, value)| (key.clone(), base64_encode(value).into()))
        .collect();
    serde_json::json!({"metadata": metadata, "data": base64_encode(&payload.data)})
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}
