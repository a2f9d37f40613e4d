//! A second PostgreSQL 15 cluster of the test's own that accepts TCP connections over TLS
//! only (`hostssl` lines alone in pg_hba.conf), with a throw-away CA made by the `openssl`
//! CLI. The machine's cluster on 127.0.0.1:5432 stays untouched (plain TCP, trust).
//!
//! The cluster runs as the `postgres` OS user from a temporary directory, on a free port,
//! with its Unix socket in that directory: the harness itself connects over the socket
//! (`local ... trust`) to set up the database and to insert and inspect rows, so only the
//! daemon goes through TLS. Dropping the value stops the cluster (`pg_ctl stop -m
//! immediate`) and deletes the directory, on success and on panic alike.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{
    DAEMON_LOGIN, TestDb, apply_schema, chown_postgres, connect, create_daemon_login, free_port,
    grant_daemon_role, postgres_temp_dir, run_as_postgres,
};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The database the harness creates in the cluster.
pub const DB_NAME: &str = "relay";

pub struct TlsPostgres {
    pub port: u16,
    /// The temporary directory: data/, the certificates, the socket and the server log.
    pub dir: PathBuf,
    /// The CA that signed the server's certificate (CN and SAN `localhost`, SAN IP 127.0.0.1).
    pub ca_cert: PathBuf,
    /// A CA that signed nothing this server presents: verification against it must fail.
    pub wrong_ca_cert: PathBuf,
    /// `url` is the daemon's, as [`DAEMON_LOGIN`], over TLS with
    /// `sslmode=verify-full&sslrootcert=<ca_cert>`; the superuser URLs use the socket.
    pub db: TestDb,
    running: bool,
}

impl TlsPostgres {
    /// initdb, certificates, `ssl = on`, start, then the outbox schema in [`DB_NAME`].
    pub async fn start() -> TlsPostgres {
        let pg_ctl = Path::new(PG_BIN).join("pg_ctl");
        assert!(
            pg_ctl.exists(),
            "{} not found: the TLS tests need PostgreSQL 15's server binaries",
            pg_ctl.display()
        );
        let dir = postgres_temp_dir("tls-pg");
        let port = free_port();
        let mut cluster = TlsPostgres {
            port,
            ca_cert: dir.join("ca.crt"),
            wrong_ca_cert: dir.join("wrong-ca.crt"),
            db: TestDb {
                name: DB_NAME.to_owned(),
                url: String::new(),
                owner_url: socket_url(&dir, port, DB_NAME),
                admin_url: socket_url(&dir, port, "postgres"),
            },
            dir,
            running: false,
        };
        cluster.make_certificates();
        cluster.init_and_start();
        cluster.db.url = cluster.url("localhost", DAEMON_LOGIN, &cluster.verify_full_params());

        let admin = connect(&cluster.db.admin_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {DB_NAME}"))
            .await
            .expect("create the TLS cluster's database");
        create_daemon_login(&admin).await;
        let client = cluster.db.connect().await;
        apply_schema(&client).await;
        grant_daemon_role(&client).await;
        cluster
    }

    /// `sslmode=verify-full&sslrootcert=<the right CA>`.
    pub fn verify_full_params(&self) -> String {
        format!("sslmode=verify-full&sslrootcert={}", self.ca_cert.display())
    }

    /// `postgres://{userinfo}@{host}:{port}/relay?{params}` (no `?` if `params` is empty).
    pub fn url(&self, host: &str, userinfo: &str, params: &str) -> String {
        let mut url = format!("postgres://{userinfo}@{host}:{}/{DB_NAME}", self.port);
        if !params.is_empty() {
            url.push('?');
            url.push_str(params);
        }
        url
    }

    /// Connects with libpq (`psql`), the reference for what `sslmode` and `sslrootcert`
    /// mean, and returns whether the session is encrypted ("t"/"f"), or libpq's error.
    /// Tests check the harness against it, so a failure of the daemon's is the daemon's.
    pub fn libpq_connect(&self, url: &str) -> Result<String, String> {
        let mut cmd = Command::new("psql");
        cmd.arg(url)
            .args(["-X", "-A", "-t", "-c"])
            .arg("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .env("PGCONNECT_TIMEOUT", "10");
        let out = super::output_within(cmd, Duration::from_secs(60));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    fn make_certificates(&self) {
        let dir = &self.dir;
        write(
            dir.join("ca.cnf"),
            "[req]\n\
             distinguished_name = dn\n\
             prompt = no\n\
             x509_extensions = v3_ca\n\
             [dn]\n\
             CN = trigger-relay test CA\n\
             [v3_ca]\n\
             basicConstraints = critical, CA:TRUE\n\
             keyUsage = critical, keyCertSign, cRLSign\n\
             subjectKeyIdentifier = hash\n",
        );
        // What a verifying client (libpq, rustls/webpki) demands of a server certificate:
        // the name in the SAN (CN alone is not enough), not a CA, serverAuth.
        write(
            dir.join("server.ext"),
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = DNS:localhost, IP:127.0.0.1\n\
             subjectKeyIdentifier = hash\n\
             authorityKeyIdentifier = keyid\n",
        );
        let ec_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        for (key, cert) in [("ca.key", "ca.crt"), ("wrong-ca.key", "wrong-ca.crt")] {
            openssl(
                dir,
                &format!(
                    "req -x509 -new {ec_key} -config ca.cnf -days 30 -keyout {key} -out {cert}"
                ),
            );
        }
        openssl(
            dir,
            &format!("req -new {ec_key} -subj /CN=localhost -keyout server.key -out server.csr"),
        );
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        openssl(
            dir,
            &format!(
                "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial 0x{serial:x} \
                 -days 30 -extfile server.ext -out server.crt"
            ),
        );
        // PostgreSQL refuses a key file others can read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod server.key");
        chown_postgres(dir);
    }

    fn init_and_start(&mut self) {
        let dir = self.dir.clone();
        let data = dir.join("data");
        let mut initdb = Command::new(Path::new(PG_BIN).join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"]);
        run_as_postgres(initdb, &dir, Duration::from_secs(120));

        write(
            data.join("pg_hba.conf"),
            "# TYPE   DATABASE USER ADDRESS      METHOD\n\
             # The harness's own setup, over the socket in the temporary directory.\n\
             local     all      all                trust\n\
             # TCP: TLS or nothing.\n\
             hostssl   all      all  127.0.0.1/32  trust\n\
             hostssl   all      all  ::1/128       trust\n",
        );
        let conf = format!(
            "\n# trigger-relay tests (tests/common/tls_pg.rs)\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{dir}'\n\
             ssl = on\n\
             ssl_cert_file = '{dir}/server.crt'\n\
             ssl_key_file = '{dir}/server.key'\n\
             max_connections = 50\n\
             shared_buffers = 16MB\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             log_min_messages = warning\n",
            port = self.port,
            dir = dir.display(),
        );
        let mut existing =
            std::fs::read_to_string(data.join("postgresql.conf")).expect("postgresql.conf");
        existing.push_str(&conf);
        write(data.join("postgresql.conf"), &existing);
        chown_postgres(&data);

        let mut start = Command::new(Path::new(PG_BIN).join("pg_ctl"));
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("postgres.log"))
            .args(["-w", "-t", "60", "start"]);
        // From here on, Drop stops whatever came up.
        self.running = true;
        super::as_postgres(&mut start, &dir);
        let out = super::output_within(start, Duration::from_secs(90));
        assert!(
            out.status.success(),
            "pg_ctl start failed ({}): {}{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn stop(&mut self) {
        if !std::mem::take(&mut self.running) {
            return;
        }
        let mut stop = Command::new(Path::new(PG_BIN).join("pg_ctl"));
        stop.arg("-D").arg(self.dir.join("data")).args([
            "-m",
            "immediate",
            "-w",
            "-t",
            "30",
            "stop",
        ]);
        super::as_postgres(&mut stop, &self.dir);
        // Runs from Drop, possibly while a failed test unwinds: report, never panic.
        match super::try_output_within(stop, Duration::from_secs(60)) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "pg_ctl stop of {} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("pg_ctl stop of {}: {e}", self.dir.display()),
        }
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A key-value connection string for the socket in `dir` (the harness's superuser access).
fn socket_url(dir: &Path, port: u16, dbname: &str) -> String {
    format!(
        "host={} port={port} user=postgres dbname={dbname}",
        dir.display()
    )
}

fn write(path: PathBuf, text: &str) {
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Runs `openssl` with `args` (split on whitespace) in `dir`.
fn openssl(dir: &Path, args: &str) {
    let mut cmd = Command::new("openssl");
    cmd.args(args.split_whitespace()).current_dir(dir);
    let out = super::output_within(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "openssl {args} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
