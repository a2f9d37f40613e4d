//! PgBouncer in transaction mode in front of a test database on 127.0.0.1:5432: the
//! deployment the README's "PgBouncer in transaction mode" paragraph describes, at its
//! harshest.
//!
//! The Debian 12 package is PgBouncer 1.18 (installed by scripts/install-debian-packages.sh).
//! 1.18 has no `max_prepared_statements` (1.21+): it never tracks protocol-level prepared
//! statements, so a statement a client prepares on one server connection is unknown on the
//! next one the pooler hands it, and named statements a client leaves behind stay on
//! server connections that other clients get later. A daemon that goes through this pooler
//! must not rely on any server-side session state between transactions.
//!
//! pgbouncer refuses to run as root: it runs as the `postgres` OS user from a temporary
//! directory holding its ini, auth file and log. Dropping the value kills it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{DAEMON_LOGIN, TestDb, as_postgres, chown_postgres, free_port, postgres_temp_dir};

pub struct PgBouncer {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

pub fn pgbouncer_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("pgbouncer"))
            .find(|candidate| candidate.is_file())
    });
    let bin = on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/pgbouncer"));
    assert!(
        bin.is_file(),
        "pgbouncer not found on PATH nor at /usr/sbin/pgbouncer: run \
         scripts/install-debian-packages.sh (scripts/test.sh does)"
    );
    bin
}

impl PgBouncer {
    /// Starts pgbouncer for `db` and waits until it accepts connections.
    pub async fn start(db: &TestDb) -> PgBouncer {
        let bin = pgbouncer_bin();
        let dir = postgres_temp_dir("pgbouncer");
        let port = free_port();
        let ini = dir.join("pgbouncer.ini");
        write(
            &dir.join("userlist.txt"),
            // auth_type = trust still wants each user listed; the password is not checked.
            &format!("\"{DAEMON_LOGIN}\" \"\"\n\"postgres\" \"\"\n"),
        );
        write(
            &ini,
            &format!(
                "[databases]\n\
                 {name} = host=127.0.0.1 port=5432 dbname={name}\n\
                 \n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 ; no Unix socket: two instances must not fight over /tmp/.s.PGSQL.<port>\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {dir}/userlist.txt\n\
                 pool_mode = transaction\n\
                 ; Several server connections from the start, handed out in turn rather than\n\
                 ; most-recently-used first: consecutive transactions of one client land on\n\
                 ; different server connections, as they do on a busy production pooler.\n\
                 default_pool_size = 8\n\
                 min_pool_size = 4\n\
                 server_round_robin = 1\n\
                 max_client_conn = 200\n\
                 ; The pooler cannot apply per-client startup parameters to shared server\n\
                 ; connections and refuses a client that sends one it does not know, unless\n\
                 ; the parameter is listed here (it is then dropped). The daemon may send\n\
                 ; `options` (e.g. -c statement_timeout=...): through this pooler such a\n\
                 ; setting is lost, so the daemon must bound its calls itself as well.\n\
                 ; extra_float_digits is what many drivers send.\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 logfile = {dir}/pgbouncer.log\n\
                 pidfile = {dir}/pgbouncer.pid\n\
                 log_connections = 0\n\
                 log_disconnections = 0\n",
                name = db.name,
                dir = dir.display(),
            ),
        );
        chown_postgres(&dir);
        let mut cmd = Command::new(bin);
        cmd.arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_postgres(&mut cmd, &dir);
        let child = cmd.spawn().expect("spawn pgbouncer");
        let mut bouncer = PgBouncer {
            port,
            dir,
            child: Some(child),
        };
        let address = bouncer.address();
        let url = db.url_via(&address);
        let mut exited = None;
        super::wait_for(
            "pgbouncer to accept a PostgreSQL connection",
            Duration::from_secs(30),
            || {
                if exited.is_none() {
                    exited = bouncer
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok())
                        .flatten();
                }
                assert!(
                    exited.is_none(),
                    "pgbouncer exited ({exited:?}):\n{}",
                    bouncer.log()
                );
                let url = url.clone();
                async move {
                    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .ok()?;
                    tokio::spawn(connection);
                    client.simple_query("SELECT 1").await.ok().map(|_| ())
                }
            },
        )
        .await;
        bouncer
    }

    /// `127.0.0.1:<port>`, for [`TestDb::url_via`].
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// pgbouncer's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
