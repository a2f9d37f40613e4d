//! Configuration: parsed once, from flags or `TRIGGER_RELAY_*` environment variables, into
//! typed structs (docs/contract.md lists every variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::outbox::State;

/// The command line, with the secrets read from their files (`secrets`): what `main`
/// parses (`Cli::try_parse`) and the tests too.
#[derive(Debug)]
pub struct Cli {
    pub log: LogConfig,
    pub command: Command,
}

/// The command line as clap derives it, before [`secrets::resolve`].
#[derive(Debug, Parser)]
#[command(
    name = "trigger-relay",
    version,
    about = "Relays dj-triggers outbox rows from PostgreSQL to Temporal"
)]
struct CliArgs {
    #[command(flatten)]
    log: LogConfig,
    #[command(subcommand)]
    command: Command,
}

impl clap::CommandFactory for Cli {
    fn command() -> clap::Command {
        CliArgs::command()
    }

    fn command_for_update() -> clap::Command {
        CliArgs::command_for_update()
    }
}

impl clap::FromArgMatches for Cli {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        let on_command_line = secrets::given_on_command_line(matches);
        let args = CliArgs::from_arg_matches_mut(matches)?;
        let mut cli = Cli {
            log: args.log,
            command: args.command,
        };
        secrets::resolve(&mut cli.command, &on_command_line, |variable| {
            std::env::var_os(variable)
        })?;
        Ok(cli)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Parser for Cli {}

/// The subcommands, each with its settings. The settings' types are `pub` because this enum
/// is (src/main.rs matches it, `cli::execute` takes it); their fields are `pub(crate)`:
/// only the crate reads them.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay (LISTEN/NOTIFY plus polling, workflow starts) and the worker of
    /// trigger_workflow, with /metrics, /healthz, /readyz. `--mode` runs either alone.
    Run(Box<RunConfig>),
    /// Cancel firings that have not been performed: pending rows become `cancelled`, the
    /// workflows of dispatched rows are asked to cancel (they stop if still waiting).
    Cancel(CancelConfig),
    /// Replay recent trigger_workflow histories from a live server against this build's
    /// workflow code; exits non-zero on nondeterminism (a deploy gate).
    ReplayHistories(ReplayHistoriesConfig),
    /// Show the outbox: rows per state, backlog, oldest pending age, recent failures.
    Status(StatusConfig),
    /// Re-dispatch rows by hand with a new generation (and so a new workflow id).
    Replay(ReplayConfig),
}

#[derive(Debug, Args)]
pub struct LogConfig {
    /// Log format.
    #[arg(
        long,
        env = "TRIGGER_RELAY_LOG_FORMAT",
        default_value = "json",
        global = true
    )]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `trigger_relay=debug`.
    #[arg(
        long = "log",
        env = "TRIGGER_RELAY_LOG",
        default_value = "info",
        global = true
    )]
    pub log_filter: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL of the site's database, e.g.
    /// postgres://relay@db:5432/site?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem
    /// (libpq's sslmode, sslrootcert, sslcert and sslkey are honoured, as are PGSSLMODE etc.).
    /// Required; or TRIGGER_RELAY_DATABASE_URL_FILE, a file holding it. A password given
    /// as this flag is visible to every user of the machine (ps): prefer either variable.
    // Empty = not given: the URL may come from its file, which `secrets::resolve` reads.
    #[arg(
        long,
        env = "TRIGGER_RELAY_DATABASE_URL",
        hide_env_values = true,
        default_value = "",
        hide_default_value = true
    )]
    pub database_url: String,
    /// Largest number of pooled PostgreSQL connections of the relay (default: max in flight
    /// + 2). The LISTEN connection and the workflow worker's pool are extra.
    #[arg(long, env = "TRIGGER_RELAY_DATABASE_POOL_SIZE",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub database_pool_size: Option<u16>,
    /// Time allowed to open a PostgreSQL connection or wait for one from the pool.
    #[arg(long, env = "TRIGGER_RELAY_DATABASE_TIMEOUT", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub database_timeout: Duration,
    /// Longest a single PostgreSQL statement may take; the daemon then gives up on it and
    /// drops the connection (a stalled connection never holds a batch).
    #[arg(long, env = "TRIGGER_RELAY_DATABASE_STATEMENT_TIMEOUT", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub database_statement_timeout: Duration,
    /// TCP_USER_TIMEOUT of PostgreSQL connections: how long sent data may stay
    /// unacknowledged before the kernel drops the connection (0 = the system's default).
    #[arg(long, env = "TRIGGER_RELAY_DATABASE_TCP_USER_TIMEOUT", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub database_tcp_user_timeout: Duration,
}

impl std::fmt::Debug for DatabaseConfig {
    /// The URL's password never reaches a log line or a panic message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("database_url", &redact_url(&self.database_url))
            .field("database_pool_size", &self.database_pool_size)
            .field("database_timeout", &self.database_timeout)
            .field(
                "database_statement_timeout",
                &self.database_statement_timeout,
            )
            .field("database_tcp_user_timeout", &self.database_tcp_user_timeout)
            .finish()
    }
}

/// Connection parameters whose value is a secret: the login's password, and the password
/// of an encrypted client key.
const SECRET_PARAMETERS: [&str; 2] = ["password", "sslpassword"];

/// The URL or libpq connection string with every secret replaced by `***`: the URL's
/// password (`postgres://relay:***@db/site`, also when it holds an unencoded `/` or `@`),
/// `password=` and `sslpassword=` query parameters (`?sslmode=require&password=***`), and
/// their key=value forms, quoted or not (`password='***'`, `password = ***`).
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", redact_uri_rest(rest)),
        None => redact_key_values(url),
    }
}

/// `user:password@host/db?params` with the password and secret parameters redacted.
fn redact_uri_rest(rest: &str) -> String {
    let query_at = rest.find(['?', '#']).unwrap_or(rest.len());
    let (before_query, query) = rest.split_at(query_at);
    // The last `@` before the query ends the user info. An unencoded `/` or `@` in the
    // password makes the URL invalid, yet the Debug output of a bad setting must not show
    // it either; a dbname holding `@` gets more redacted than needed, which is harmless.
    let before_query = match before_query.rfind('@') {
        Some(at) => {
            let (userinfo, host) = before_query.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***{host}"),
                None => before_query.to_owned(),
            }
        }
        None => before_query.to_owned(),
    };
    let Some(params) = query.strip_prefix('?') else {
        return format!("{before_query}{query}");
    };
    let (params, fragment) = match params.find('#') {
        Some(at) => params.split_at(at),
        None => (params, ""),
    };
    let params = params
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_parameter(&percent_decode(key)) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{before_query}?{params}{fragment}")
}

fn is_secret_parameter(key: &str) -> bool {
    SECRET_PARAMETERS.contains(&key.trim())
}

/// `%xx` decoded (libpq decodes URI parameter names too); an invalid escape stays as is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A libpq key=value connection string (`host=db password='s3 cret'`) with the values of
/// secret keys replaced by `***`, read as libpq reads it: spaces around `=`, values in
/// single quotes with `\'` and `\\` escapes, or unquoted up to the next space.
fn redact_key_values(conninfo: &str) -> String {
    let chars: Vec<char> = conninfo.chars().collect();
    let mut out = String::with_capacity(conninfo.len());
    let mut i = 0;
    let skip_spaces = |mut i: usize| {
        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let start = i;
        i = skip_spaces(i);
        let key_start = i;
        while chars
            .get(i)
            .is_some_and(|c| !c.is_whitespace() && *c != '=')
        {
            i += 1;
        }
        let key: String = chars[key_start..i].iter().collect();
        i = skip_spaces(i);
        if chars.get(i) != Some(&'=') {
            // Not key=value (libpq refuses it): keep the rest as it is.
            out.extend(&chars[start..]);
            break;
        }
        i = skip_spaces(i + 1);
        let value_start = i;
        if chars.get(i) == Some(&'\'') {
            i += 1;
            while let Some(&c) = chars.get(i) {
                i += 1;
                match c {
                    '\\' => i += 1,
                    '\'' => break,
                    _ => {}
                }
            }
        } else {
            while let Some(&c) = chars.get(i) {
                if c.is_whitespace() {
                    break;
                }
                i += if c == '\\' { 2 } else { 1 };
            }
        }
        let i_end = i.min(chars.len());
        out.extend(&chars[start..value_start]);
        if is_secret_parameter(&key) {
            let quoted = chars.get(value_start) == Some(&'\'');
            out.push_str(if quoted { "'***'" } else { "***" });
        } else {
            out.extend(&chars[value_start..i_end]);
        }
        i = i_end;
    }
    out
}

/// Secrets from files (`TRIGGER_RELAY_DATABASE_URL_FILE`, `TRIGGER_RELAY_TEMPORAL_API_KEY_FILE`:
/// systemd's `LoadCredential=`, Kubernetes secret volumes), and a warning when a secret is
/// a command-line flag, which every user of the machine reads in `ps` (docs/contract.md,
/// "Daemon configuration").
pub(crate) mod secrets {
    use std::ffi::OsString;
    use std::path::Path;

    use clap::ArgMatches;
    use clap::error::ErrorKind;
    use clap::parser::ValueSource;

    use super::{Command, DatabaseConfig, TemporalConfig, redact_url};

    pub(crate) const DATABASE_URL_FILE: &str = "TRIGGER_RELAY_DATABASE_URL_FILE";
    pub(crate) const TEMPORAL_API_KEY_FILE: &str = "TRIGGER_RELAY_TEMPORAL_API_KEY_FILE";

    /// A URL or an API key is far smaller; a bigger file is the wrong file.
    const MAX_SECRET_BYTES: u64 = 64 * 1024;

    /// Which secret flags the command line itself carries (not the environment).
    #[derive(Debug, Default)]
    pub(crate) struct OnCommandLine {
        pub(crate) database_url: bool,
        pub(crate) temporal_api_key: bool,
    }

    pub(crate) fn given_on_command_line(matches: &ArgMatches) -> OnCommandLine {
        let Some((_, sub)) = matches.subcommand() else {
            return OnCommandLine::default();
        };
        let from_flag = |id: &str| {
            // `value_source` of an id the subcommand does not have is a programming error
            // to clap; `try_contains_id` asks first.
            sub.try_contains_id(id).unwrap_or(false)
                && sub.value_source(id) == Some(ValueSource::CommandLine)
        };
        OnCommandLine {
            database_url: from_flag("database_url"),
            temporal_api_key: from_flag("temporal_api_key"),
        }
    }

    /// Fills each secret from its file where the file variable is set, refuses both or
    /// neither (for the database URL), and warns about secrets on the command line.
    pub(crate) fn resolve(
        command: &mut Command,
        on_command_line: &OnCommandLine,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<(), clap::Error> {
        let (database, temporal): (Option<&mut DatabaseConfig>, Option<&mut TemporalConfig>) =
            match command {
                Command::Run(c) => {
                    let c = &mut **c;
                    (Some(&mut c.database), Some(&mut c.temporal))
                }
                Command::Cancel(c) => (Some(&mut c.database), Some(&mut c.temporal)),
                Command::Status(c) => (Some(&mut c.database), None),
                Command::Replay(c) => (Some(&mut c.database), None),
                Command::ReplayHistories(c) => (None, Some(&mut c.temporal)),
            };
        let file_of = |variable: &str| env(variable).filter(|v| !v.is_empty());
        if let Some(database) = database {
            match (database.database_url.is_empty(), file_of(DATABASE_URL_FILE)) {
                (true, Some(path)) => {
                    database.database_url = read(DATABASE_URL_FILE, Path::new(&path))?;
                }
                (true, None) => {
                    return Err(clap::Error::raw(
                        ErrorKind::MissingRequiredArgument,
                        format!(
                            "no database URL: set TRIGGER_RELAY_DATABASE_URL, or \
                             {DATABASE_URL_FILE} to a file holding it"
                        ),
                    ));
                }
                (false, Some(_)) => {
                    return Err(both("TRIGGER_RELAY_DATABASE_URL", DATABASE_URL_FILE));
                }
                (false, None) => {}
            }
            // A URL without a password (certificate or peer authentication) is no secret.
            if on_command_line.database_url
                && redact_url(&database.database_url) != database.database_url
            {
                warn(
                    "--database-url",
                    "TRIGGER_RELAY_DATABASE_URL",
                    DATABASE_URL_FILE,
                );
            }
        }
        if let Some(temporal) = temporal {
            match (&temporal.temporal_api_key, file_of(TEMPORAL_API_KEY_FILE)) {
                (None, Some(path)) => {
                    temporal.temporal_api_key =
                        Some(read(TEMPORAL_API_KEY_FILE, Path::new(&path))?);
                }
                (Some(_), Some(_)) => {
                    return Err(both(
                        "TRIGGER_RELAY_TEMPORAL_API_KEY",
                        TEMPORAL_API_KEY_FILE,
                    ));
                }
                _ => {}
            }
            if on_command_line.temporal_api_key {
                warn(
                    "--temporal-api-key",
                    "TRIGGER_RELAY_TEMPORAL_API_KEY",
                    TEMPORAL_API_KEY_FILE,
                );
            }
        }
        Ok(())
    }

    fn both(variable: &str, file_variable: &str) -> clap::Error {
        clap::Error::raw(
            ErrorKind::ArgumentConflict,
            format!("{variable} (or its flag) and {file_variable} are both set; set one of them"),
        )
    }

    /// A warning rather than a refusal: the value works, and refusing would break every
    /// script that passes it today; the operator learns how to keep it out of `ps`.
    fn warn(flag: &str, variable: &str, file_variable: &str) {
        eprintln!(
            "trigger-relay: warning: {flag} puts a secret on the command line, where every \
             user of this machine can read it (ps, /proc/<pid>/cmdline); set {variable} or \
             {file_variable} instead"
        );
    }

    /// The file's text without its trailing newline(s): what `echo` or an editor leaves.
    pub(crate) fn read(variable: &str, path: &Path) -> Result<String, clap::Error> {
        let fail = |problem: String| {
            clap::Error::raw(
                ErrorKind::Io,
                format!("{variable}={}: {problem}", path.display()),
            )
        };
        let metadata = std::fs::metadata(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        if !metadata.is_file() {
            return Err(fail("not a regular file".into()));
        }
        if metadata.len() > MAX_SECRET_BYTES {
            return Err(fail(format!(
                "{} bytes; a secret file holds at most {MAX_SECRET_BYTES}",
                metadata.len()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".into()))?;
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(fail("the file is empty".into()));
        }
        Ok(value.to_owned())
    }
}

#[derive(Clone, Args)]
pub(crate) struct TemporalConfig {
    /// Temporal frontend address, e.g. http://127.0.0.1:7233 or https://ns.acct.tmprl.cloud:7233.
    #[arg(
        long,
        env = "TRIGGER_RELAY_TEMPORAL_ADDRESS",
        default_value = "http://127.0.0.1:7233"
    )]
    pub(crate) temporal_address: url::Url,
    /// Temporal namespace.
    #[arg(
        long,
        env = "TRIGGER_RELAY_TEMPORAL_NAMESPACE",
        default_value = "default"
    )]
    pub(crate) temporal_namespace: String,
    /// Task queue of `trigger_workflow`.
    #[arg(
        long,
        env = "TRIGGER_RELAY_TEMPORAL_TASK_QUEUE",
        default_value = "trigger-relay"
    )]
    pub(crate) temporal_task_queue: String,
    /// API key (Temporal Cloud). Enables TLS. Never logged. Or
    /// TRIGGER_RELAY_TEMPORAL_API_KEY_FILE, a file holding it. As a flag it is visible to
    /// every user of the machine (ps): prefer either variable.
    #[arg(long, env = "TRIGGER_RELAY_TEMPORAL_API_KEY", hide_env_values = true)]
    pub(crate) temporal_api_key: Option<String>,
    /// PEM file of the CA that signed the server's certificate (self-hosted TLS).
    #[arg(long, env = "TRIGGER_RELAY_TEMPORAL_TLS_CA")]
    pub(crate) temporal_tls_ca: Option<PathBuf>,
    /// PEM client certificate for mTLS (with --temporal-tls-key).
    #[arg(
        long,
        env = "TRIGGER_RELAY_TEMPORAL_TLS_CERT",
        requires = "temporal_tls_key"
    )]
    pub(crate) temporal_tls_cert: Option<PathBuf>,
    /// PEM client key for mTLS (with --temporal-tls-cert).
    #[arg(
        long,
        env = "TRIGGER_RELAY_TEMPORAL_TLS_KEY",
        requires = "temporal_tls_cert"
    )]
    pub(crate) temporal_tls_key: Option<PathBuf>,
    /// Server name to verify the certificate against, if not the address's host.
    #[arg(long, env = "TRIGGER_RELAY_TEMPORAL_TLS_SERVER_NAME")]
    pub(crate) temporal_tls_server_name: Option<String>,
    /// Prefix of workflow ids: `{prefix}-{outbox id}-g{generation}`. Give each site sharing a
    /// namespace its own prefix.
    #[arg(
        long,
        env = "TRIGGER_RELAY_WORKFLOW_ID_PREFIX",
        default_value = "trigger-outbox"
    )]
    pub(crate) workflow_id_prefix: String,
    /// Payload encryption: every command that talks to Temporal encrypts and decrypts with
    /// the same keys.
    #[command(flatten)]
    pub(crate) codec: CodecConfig,
}

/// Payload encryption keys (src/codec/, docs/operations.md "Encrypting payloads"). The
/// Python worker reads the same two variables.
#[derive(Debug, Clone, Args)]
pub(crate) struct CodecConfig {
    /// File of payload encryption keys, one `<key id>=<base64 of 32 bytes>` per line (keys
    /// live in files, never in flags). Set with TRIGGER_RELAY_CODEC_CURRENT_KEY_ID, every
    /// payload sent to Temporal (workflow input with the context, memo, activity inputs and
    /// results, failure messages) is AES-256-GCM encrypted, in the format of Temporal's
    /// encryption samples; any key of the file decrypts.
    #[arg(long, env = "TRIGGER_RELAY_CODEC_KEYS_FILE")]
    pub(crate) codec_keys_file: Option<PathBuf>,
    /// Id of the key of TRIGGER_RELAY_CODEC_KEYS_FILE that encrypts; the others only decrypt
    /// (key rotation: add the new key, make it current, keep the old ones while firings
    /// encrypted with them may still run).
    #[arg(long, env = "TRIGGER_RELAY_CODEC_CURRENT_KEY_ID")]
    pub(crate) codec_current_key_id: Option<String>,
}

/// The codec endpoint on the HTTP port: POST /codec/decode and /codec/encode for the
/// `temporal` CLI and the Temporal UI (src/codec/server.rs). Off unless a token is set.
#[derive(Debug, Clone, Args)]
pub(crate) struct CodecServerConfig {
    /// File holding the bearer token that callers of /codec/decode and /codec/encode must
    /// send (`Authorization: Bearer <token>`; at least 16 characters). Setting it turns the
    /// endpoint on; it needs the codec keys.
    #[arg(long, env = "TRIGGER_RELAY_CODEC_SERVER_TOKEN_FILE")]
    pub(crate) codec_server_token_file: Option<PathBuf>,
    /// Origin of the Temporal UI allowed to call the codec endpoint from a browser (CORS),
    /// e.g. https://cloud.temporal.io or http://localhost:8233; requests from any other
    /// origin are refused. Unset: no browser may call it (the CLI sends no origin).
    #[arg(long, env = "TRIGGER_RELAY_CODEC_CORS_ORIGIN")]
    pub(crate) codec_cors_origin: Option<String>,
}

impl std::fmt::Debug for TemporalConfig {
    /// The API key never reaches a log line or a panic message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemporalConfig")
            .field("temporal_address", &self.temporal_address.as_str())
            .field("temporal_namespace", &self.temporal_namespace)
            .field("temporal_task_queue", &self.temporal_task_queue)
            .field(
                "temporal_api_key",
                &self.temporal_api_key.as_ref().map(|_| "***"),
            )
            .field("temporal_tls_ca", &self.temporal_tls_ca)
            .field("temporal_tls_cert", &self.temporal_tls_cert)
            .field("temporal_tls_key", &self.temporal_tls_key)
            .field("temporal_tls_server_name", &self.temporal_tls_server_name)
            .field("workflow_id_prefix", &self.workflow_id_prefix)
            .field("codec", &self.codec)
            .finish()
    }
}

impl TemporalConfig {
    pub(crate) fn tls_enabled(&self) -> bool {
        self.temporal_api_key.is_some()
            || self.temporal_tls_ca.is_some()
            || self.temporal_tls_cert.is_some()
            || self.temporal_address.scheme() == "https"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Relay and worker in one process (the sidecar default).
    All,
    /// Only the relay: outbox rows to workflow starts.
    Relay,
    /// Only the worker of trigger_workflow and the outbox activities.
    Worker,
}

impl Mode {
    pub(crate) fn relay(self) -> bool {
        matches!(self, Mode::All | Mode::Relay)
    }

    pub(crate) fn worker(self) -> bool {
        matches!(self, Mode::All | Mode::Worker)
    }
}

/// The worker's settings: task queues, timeouts and retries of the workflow's activities.
#[derive(Debug, Clone, Args)]
pub(crate) struct WorkerConfig {
    /// Task queue of the Python activity worker (manage.py trigger_relay_worker).
    #[arg(
        long,
        env = "TRIGGER_RELAY_DJANGO_TASK_QUEUE",
        default_value = "trigger-relay-django"
    )]
    pub(crate) django_task_queue: String,
    /// Start-to-close timeout of one attempt of the Python perform_firing activity.
    #[arg(long, env = "TRIGGER_RELAY_PERFORM_TIMEOUT", default_value = "5m",
          value_parser = humantime::parse_duration)]
    pub(crate) perform_timeout: Duration,
    /// Heartbeat timeout of perform_firing: the Python worker heartbeats from a thread of its
    /// own while the site's code runs, so a killed or cut-off worker's attempt is retried
    /// after this, not after TRIGGER_RELAY_PERFORM_TIMEOUT (guarantees §3.6). 0s: no heartbeat
    /// timeout.
    #[arg(long, env = "TRIGGER_RELAY_PERFORM_HEARTBEAT_TIMEOUT", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub(crate) perform_heartbeat_timeout: Duration,
    /// Attempts of perform_firing before the row is recorded `failed` (0 = unlimited).
    #[arg(long, env = "TRIGGER_RELAY_PERFORM_MAX_ATTEMPTS", default_value_t = 10)]
    pub(crate) perform_max_attempts: u32,
    /// Start-to-close timeout of one attempt of record_outcome (retried until it succeeds).
    #[arg(long, env = "TRIGGER_RELAY_RECORD_TIMEOUT", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub(crate) record_timeout: Duration,
    /// Time in-flight workflow and activity tasks get after SIGTERM.
    #[arg(long, env = "TRIGGER_RELAY_WORKER_SHUTDOWN_TIMEOUT", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub(crate) worker_shutdown_timeout: Duration,
    /// How long a workflow task waits on a dead worker's sticky queue before any worker may
    /// take it.
    #[arg(long, env = "TRIGGER_RELAY_STICKY_TIMEOUT", default_value = "3s",
          value_parser = humantime::parse_duration)]
    pub(crate) sticky_timeout: Duration,
    /// PostgreSQL connections of the workflow worker's record_outcome activities, a pool of
    /// their own so they never wait behind the relay's batches (nor the reverse).
    #[arg(long, env = "TRIGGER_RELAY_WORKER_DATABASE_POOL_SIZE", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) worker_database_pool_size: u16,
    /// Workflows the worker keeps in memory between their tasks (the SDK's sticky cache),
    /// each with its input: where contexts are large, a lower number bounds the worker's
    /// memory (docs/contract.md, "Memory"); an evicted workflow is replayed from its history
    /// at its next task.
    #[arg(long, env = "TRIGGER_RELAY_WORKER_MAX_CACHED_WORKFLOWS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) worker_max_cached_workflows: u32,
}

#[derive(Debug, Clone, Args)]
pub struct RunConfig {
    #[command(flatten)]
    pub(crate) database: DatabaseConfig,
    #[command(flatten)]
    pub(crate) temporal: TemporalConfig,
    #[command(flatten)]
    pub(crate) worker: WorkerConfig,
    /// What this process runs.
    #[arg(long, env = "TRIGGER_RELAY_MODE", default_value = "all")]
    pub(crate) mode: Mode,
    /// Site identity written into every workflow input and checked by the activities
    /// (docs/contract.md, "Site identity"). Default: the id the database holds
    /// (trigger_relay_site). Set it alike for the daemon and the Python worker.
    #[arg(long, env = "TRIGGER_RELAY_SITE")]
    pub(crate) site: Option<String>,
    /// LISTEN for the outbox's NOTIFY. `false` = poll only (PgBouncer in transaction mode).
    #[arg(long, env = "TRIGGER_RELAY_LISTEN", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub(crate) listen: bool,
    /// Safety-net poll period: a row is picked up within it even without a notification.
    #[arg(long, env = "TRIGGER_RELAY_POLL_INTERVAL", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub(crate) poll_interval: Duration,
    /// Rows claimed per query.
    #[arg(long, env = "TRIGGER_RELAY_BATCH_SIZE", default_value_t = 100,
          value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub(crate) batch_size: u16,
    /// Claim lease: a row claimed by a replica that died returns to the others after it.
    #[arg(long, env = "TRIGGER_RELAY_LEASE", default_value = "60s",
          value_parser = humantime::parse_duration)]
    pub(crate) lease: Duration,
    /// Workflow starts in flight at once per replica.
    #[arg(long, env = "TRIGGER_RELAY_MAX_IN_FLIGHT", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=1_024))]
    pub(crate) max_in_flight: u16,
    /// Largest workflow input accepted; bigger rows are failed (Temporal's default blob
    /// limit is 2 MiB).
    #[arg(long, env = "TRIGGER_RELAY_MAX_INPUT_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub(crate) max_input_bytes: usize,
    /// Most bytes of context (as text) one claim returns: a batch stops before the row
    /// that would go past it (one row always comes, however large, if within
    /// TRIGGER_RELAY_MAX_INPUT_BYTES). Bounds the daemon's memory under large contexts.
    #[arg(long, env = "TRIGGER_RELAY_CLAIM_MAX_BYTES", default_value_t = DEFAULT_CLAIM_MAX_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) claim_max_bytes: u64,
    /// First delay after a Temporal or PostgreSQL error; doubles up to the maximum, with jitter.
    #[arg(long, env = "TRIGGER_RELAY_BACKOFF_INITIAL", default_value = "200ms",
          value_parser = humantime::parse_duration)]
    pub(crate) backoff_initial: Duration,
    /// Largest delay between retries after errors.
    #[arg(long, env = "TRIGGER_RELAY_BACKOFF_MAX", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub(crate) backoff_max: Duration,
    /// Address of the HTTP endpoint: /metrics, /healthz, /readyz.
    #[arg(
        long,
        env = "TRIGGER_RELAY_METRICS_ADDR",
        default_value = "127.0.0.1:9187"
    )]
    pub(crate) metrics_addr: SocketAddr,
    /// How often the backlog gauges are refreshed.
    #[arg(long, env = "TRIGGER_RELAY_STATS_INTERVAL", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub(crate) stats_interval: Duration,
    /// Time in-flight starts get to finish after SIGTERM before their claims are released.
    #[arg(long, env = "TRIGGER_RELAY_SHUTDOWN_TIMEOUT", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub(crate) shutdown_timeout: Duration,
    /// Delete done, skipped and cancelled rows this long after they finished (e.g. `30d`);
    /// unset keeps them. Failed rows are never deleted.
    #[arg(long, env = "TRIGGER_RELAY_RETENTION", value_parser = humantime::parse_duration)]
    pub(crate) retention: Option<Duration>,
    /// How often retention runs.
    #[arg(long, env = "TRIGGER_RELAY_RETENTION_INTERVAL", default_value = "10m",
          value_parser = humantime::parse_duration)]
    pub(crate) retention_interval: Duration,
    /// Name of this replica in `claimed_by` (default: hostname-pid).
    #[arg(long, env = "TRIGGER_RELAY_REPLICA")]
    pub(crate) replica: Option<String>,
    /// How often the reconciler looks for dispatched rows whose workflow closed without
    /// recording an outcome (terminated, reset, timed out, gone).
    #[arg(long, env = "TRIGGER_RELAY_RECONCILE_INTERVAL", default_value = "1m",
          value_parser = humantime::parse_duration)]
    pub(crate) reconcile_interval: Duration,
    /// A dispatched row's workflow is described once it has been dispatched this long, and
    /// again every time this much has passed; also the margin of the overdue gauge.
    #[arg(long, env = "TRIGGER_RELAY_RECONCILE_AFTER", default_value = "10m",
          value_parser = humantime::parse_duration)]
    pub(crate) reconcile_after: Duration,
    /// How often the idle LISTEN connection proves it is alive; a check that takes longer
    /// than this drops the connection and reconnects.
    #[arg(long, env = "TRIGGER_RELAY_LISTEN_LIVENESS", default_value = "15s",
          value_parser = humantime::parse_duration)]
    pub(crate) listen_liveness: Duration,
    /// Put the user pk and the trigger's name in each workflow's memo, search attributes
    /// (UserPk, TriggerName) and summary, where the Temporal UI and `temporal workflow list`
    /// show them. Search attributes and summaries are never encrypted: `false` keeps this
    /// personal data out of Temporal's visibility (firings are then found by outbox id,
    /// trigger id and event id).
    #[arg(long, env = "TRIGGER_RELAY_VISIBILITY_PERSONAL_DATA", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub(crate) visibility_personal_data: bool,
    #[command(flatten)]
    pub(crate) codec_server: CodecServerConfig,
    /// Testing only: make the named task (relay, listener, stats, retention) panic once the
    /// daemon runs, to prove that a dead task ends the process.
    #[arg(long, env = "TRIGGER_RELAY_TEST_PANIC_TASK", hide = true)]
    pub(crate) test_panic_task: Option<String>,
}

/// TRIGGER_RELAY_CLAIM_MAX_BYTES's default: with the daemon's copies of a batch's contexts
/// (docs/contract.md, "Memory"), a batch this large keeps the sidecar well inside the
/// Kubernetes manifest's 256 MiB (deploy/kubernetes).
const DEFAULT_CLAIM_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// gRPC's default largest message: a start request must fit, with the input inside it.
const GRPC_MESSAGE_LIMIT: usize = 4 * 1024 * 1024;
/// Room for the start request's other fields (ids, task queue, headers, summary).
const START_REQUEST_OVERHEAD: usize = 64 * 1024;
/// Temporal's default limit on ids and task queue names (`limit.maxIDLength`).
const TEMPORAL_MAX_ID_LENGTH: usize = 1000;

impl RunConfig {
    /// Checks what clap cannot: relations between values.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.poll_interval.is_zero() {
            return Err("TRIGGER_RELAY_POLL_INTERVAL must be greater than zero".into());
        }
        if self.lease < Duration::from_secs(1) {
            return Err("TRIGGER_RELAY_LEASE must be at least 1s".into());
        }
        if self.backoff_initial.is_zero() || self.backoff_initial > self.backoff_max {
            return Err(
                "TRIGGER_RELAY_BACKOFF_INITIAL must be > 0 and <= TRIGGER_RELAY_BACKOFF_MAX".into(),
            );
        }
        if self.retention_interval.is_zero() {
            return Err("TRIGGER_RELAY_RETENTION_INTERVAL must be greater than zero".into());
        }
        if self.reconcile_interval.is_zero() || self.reconcile_after.is_zero() {
            return Err(
                "TRIGGER_RELAY_RECONCILE_INTERVAL and TRIGGER_RELAY_RECONCILE_AFTER must be \
                 greater than zero"
                    .into(),
            );
        }
        if self.listen_liveness < Duration::from_secs(1) {
            return Err("TRIGGER_RELAY_LISTEN_LIVENESS must be at least 1s".into());
        }
        if self.database.database_statement_timeout < Duration::from_millis(100) {
            return Err("TRIGGER_RELAY_DATABASE_STATEMENT_TIMEOUT must be at least 100ms".into());
        }
        // Everything Temporal would refuse for every row is refused here, at start, with the
        // variable's name, instead of failing or stalling rows one by one.
        let prefix = &self.temporal.workflow_id_prefix;
        if prefix.is_empty() || prefix.len() > 200 {
            return Err("TRIGGER_RELAY_WORKFLOW_ID_PREFIX must be 1 to 200 bytes long".into());
        }
        for (variable, value) in [
            (
                "TRIGGER_RELAY_TEMPORAL_TASK_QUEUE",
                &self.temporal.temporal_task_queue,
            ),
            (
                "TRIGGER_RELAY_DJANGO_TASK_QUEUE",
                &self.worker.django_task_queue,
            ),
            (
                "TRIGGER_RELAY_TEMPORAL_NAMESPACE",
                &self.temporal.temporal_namespace,
            ),
        ] {
            if value.trim().is_empty() {
                return Err(format!("{variable} must not be empty"));
            }
            if value.len() > TEMPORAL_MAX_ID_LENGTH {
                return Err(format!(
                    "{variable} is {} bytes long; Temporal accepts at most {TEMPORAL_MAX_ID_LENGTH}",
                    value.len()
                ));
            }
        }
        let input_cap = GRPC_MESSAGE_LIMIT - START_REQUEST_OVERHEAD;
        if self.max_input_bytes == 0 || self.max_input_bytes > input_cap {
            return Err(format!(
                "TRIGGER_RELAY_MAX_INPUT_BYTES must be 1 to {input_cap} (a start request \
                 must fit gRPC's 4 MiB message limit)"
            ));
        }
        Ok(())
    }

    /// The relay's pool: every start in flight may write its row, plus the claim, the
    /// backlog gauges and retention.
    pub(crate) fn relay_pool_size(&self) -> usize {
        match self.database.database_pool_size {
            Some(size) => usize::from(size),
            None => usize::from(self.max_in_flight) + 2,
        }
    }

    pub(crate) fn replica_name(&self) -> String {
        self.replica.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "relay".to_owned());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[derive(Debug, Args)]
pub struct StatusConfig {
    #[command(flatten)]
    pub(crate) database: DatabaseConfig,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub(crate) json: bool,
    /// How many recent failures to show.
    #[arg(long, default_value_t = 10)]
    pub(crate) failures: i64,
}

#[derive(Debug, Args)]
pub struct ReplayConfig {
    #[command(flatten)]
    pub(crate) database: DatabaseConfig,
    /// Row ids (repeat or comma-separate).
    #[arg(long = "id", value_delimiter = ',')]
    pub(crate) ids: Vec<i64>,
    /// Id range, inclusive: `100..200`, `100..` or `..200`.
    #[arg(long, value_parser = parse_id_range)]
    pub(crate) id_range: Option<IdRange>,
    /// Rows in these states (repeat or comma-separate).
    #[arg(long = "state", value_delimiter = ',')]
    pub(crate) states: Vec<State>,
    /// Rows of these trigger ids.
    #[arg(long = "trigger", value_delimiter = ',')]
    pub(crate) triggers: Vec<i64>,
    /// Rows created at or after this time (RFC 3339).
    #[arg(long)]
    pub(crate) created_after: Option<DateTime<Utc>>,
    /// Rows created before this time (RFC 3339).
    #[arg(long)]
    pub(crate) created_before: Option<DateTime<Utc>>,
    /// Also replay rows still `dispatched` (their first workflow may still be running).
    #[arg(long)]
    pub(crate) include_dispatched: bool,
    /// List what would be replayed; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

impl ReplayConfig {
    pub(crate) fn has_selector(&self) -> bool {
        !self.ids.is_empty()
            || self.id_range.is_some()
            || !self.states.is_empty()
            || !self.triggers.is_empty()
            || self.created_after.is_some()
            || self.created_before.is_some()
    }
}

#[derive(Debug, Args)]
pub struct CancelConfig {
    #[command(flatten)]
    pub(crate) database: DatabaseConfig,
    #[command(flatten)]
    pub(crate) temporal: TemporalConfig,
    /// Row ids (repeat or comma-separate).
    #[arg(long = "id", value_delimiter = ',')]
    pub(crate) ids: Vec<i64>,
    /// Rows of these trigger ids.
    #[arg(long = "trigger", value_delimiter = ',')]
    pub(crate) triggers: Vec<i64>,
    /// Rows of these user primary keys.
    #[arg(long = "user", value_delimiter = ',')]
    pub(crate) users: Vec<String>,
    /// List what would be cancelled; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayHistoriesConfig {
    #[command(flatten)]
    pub(crate) temporal: TemporalConfig,
    #[command(flatten)]
    pub(crate) worker: WorkerConfig,
    /// Visibility query choosing the histories.
    #[arg(long, default_value = "WorkflowType = 'trigger_workflow'")]
    pub(crate) query: String,
    /// At most this many histories, most recent first.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
    /// Also write each fetched history as JSON into this directory (to record fixtures).
    #[arg(long, conflicts_with = "dir")]
    pub(crate) save_dir: Option<PathBuf>,
    /// Replay the `*.json` histories of this directory instead of fetching from a server.
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct IdRange {
    pub(crate) from: Option<i64>,
    pub(crate) to: Option<i64>,
}

fn parse_id_range(s: &str) -> Result<IdRange, String> {
    let (from, to) = s
        .split_once("..")
        .ok_or_else(|| format!("id range {s:?} must look like 100..200, 100.. or ..200"))?;
    let parse = |part: &str| -> Result<Option<i64>, String> {
        if part.is_empty() {
            Ok(None)
        } else {
            part.parse()
                .map(Some)
                .map_err(|_| format!("{part:?} in id range {s:?} is not an integer"))
        }
    };
    let range = IdRange {
        from: parse(from)?,
        to: parse(to)?,
    };
    match range {
        IdRange {
            from: None,
            to: None,
        } => Err("id range needs at least one bound".into()),
        IdRange {
            from: Some(a),
            to: Some(b),
        } if a > b => Err(format!("id range {s:?} is empty: {a} > {b}")),
        _ => Ok(range),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_ranges() {
        assert_eq!(
            parse_id_range("1..5"),
            Ok(IdRange {
                from: Some(1),
                to: Some(5)
            })
        );
        assert_eq!(
            parse_id_range("7.."),
            Ok(IdRange {
                from: Some(7),
                to: None
            })
        );
        assert!(parse_id_range("..").is_err());
        assert!(parse_id_range("5..1").is_err());
        assert!(parse_id_range("a..b").is_err());
    }

    #[test]
    fn the_relay_pool_fits_its_starts_in_flight() {
        let parse = |extra: &[&str]| {
            let mut args = vec![
                "trigger-relay",
                "run",
                "--database-url",
                "postgres://db/site",
            ];
            args.extend_from_slice(extra);
            match Cli::try_parse_from(args).map(|cli| cli.command) {
                Ok(Command::Run(config)) => Some(config.relay_pool_size()),
                _ => None,
            }
        };
        // Every start in flight may write its row while the claim and the gauges run.
        assert_eq!(parse(&[]), Some(18));
        assert_eq!(parse(&["--max-in-flight", "64"]), Some(66));
        assert_eq!(parse(&["--database-pool-size", "5"]), Some(5));
    }

    #[test]
    fn the_claim_byte_budget_is_positive() {
        let parse = |extra: &[&str]| {
            let mut args = vec![
                "trigger-relay",
                "run",
                "--database-url",
                "postgres://db/site",
            ];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Command::Run(config) => Some(config.claim_max_bytes),
                _ => None,
            })
        };
        assert_eq!(parse(&[]).ok().flatten(), Some(8 * 1024 * 1024));
        assert_eq!(
            parse(&["--claim-max-bytes", "1000"]).ok().flatten(),
            Some(1000)
        );
        assert!(parse(&["--claim-max-bytes", "0"]).is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://relay:s3cret@db:5432/site?sslmode=require"),
            "postgres://relay:***@db:5432/site?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://relay@db/site"),
            "postgres://relay@db/site"
        );
        assert_eq!(
            redact_url("host=db password=s3cret user=relay"),
            "host=db password=*** user=relay"
        );
        let config = DatabaseConfig {
            database_url: "postgres://relay:s3cret@db/site".into(),
            database_pool_size: None,
            database_timeout: Duration::from_secs(5),
            database_statement_timeout: Duration::from_secs(30),
            database_tcp_user_timeout: Duration::from_secs(30),
        };
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn every_form_of_password_is_redacted() {
        for (url, redacted) in [
            // Query parameters, libpq's URI form (percent-encoded names too).
            (
                "postgres://relay@db/site?sslmode=require&password=s3cret",
                "postgres://relay@db/site?sslmode=require&password=***",
            ),
            (
                "postgresql://db/site?password=s3cret&sslmode=verify-full",
                "postgresql://db/site?password=***&sslmode=verify-full",
            ),
            (
                "postgres://db/site?pass%77ord=s3cret",
                "postgres://db/site?pass%77ord=***",
            ),
            (
                "postgres://relay@db/site?sslkey=/k.pem&sslpassword=s3cret#x",
                "postgres://relay@db/site?sslkey=/k.pem&sslpassword=***#x",
            ),
            // A password holding an unencoded `/` or `@`.
            (
                "postgres://relay:s3/cr@et@db:5432/site",
                "postgres://relay:***@db:5432/site",
            ),
            ("postgres://:s3cret@db/site", "postgres://:***@db/site"),
            // libpq key=value: quoted, spaces around `=`, escapes.
            (
                "host=db password='s3 cret' user=relay",
                "host=db password='***' user=relay",
            ),
            (
                "host=db password = s3cret user=relay",
                "host=db password = *** user=relay",
            ),
            (
                r"password='it\'s s3cret' dbname=site",
                "password='***' dbname=site",
            ),
            (r"password=s3\ cret host=db", "password=*** host=db"),
            ("sslpassword='k3y' host=db", "sslpassword='***' host=db"),
            // No secret: as it was.
            (
                "host=db user=relay dbname='my site'",
                "host=db user=relay dbname='my site'",
            ),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
            assert!(!redact_url(url).contains("s3"), "{url}");
        }
    }

    /// The command line parsed with `env` as the only file variables (the process's own
    /// environment is the test runner's).
    fn parse_with_env(
        args: &[&str],
        env: &[(&str, &std::path::Path)],
    ) -> Result<Command, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let mut matches = CliArgs::command().try_get_matches_from(args)?;
        let on_command_line = secrets::given_on_command_line(&matches);
        let mut command = CliArgs::from_arg_matches_mut(&mut matches)?.command;
        secrets::resolve(&mut command, &on_command_line, |variable| {
            env.iter()
                .find(|(name, _)| *name == variable)
                .map(|(_, path)| path.as_os_str().to_owned())
        })?;
        Ok(command)
    }

    #[test]
    fn secrets_come_from_their_files() {
        let dir =
            std::env::temp_dir().join(format!("trigger-relay-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let url_file = dir.join("url");
        std::fs::write(&url_file, "postgres://relay:s3cret@db/site\n").expect("write");
        let key_file = dir.join("key");
        std::fs::write(&key_file, "k3y\r\n").expect("write");
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let missing = dir.join("missing");

        let run = parse_with_env(
            &["trigger-relay", "run"],
            &[
                (secrets::DATABASE_URL_FILE, &url_file),
                (secrets::TEMPORAL_API_KEY_FILE, &key_file),
            ],
        );
        let resolved = match run {
            Ok(Command::Run(config)) => Some((
                config.database.database_url.clone(),
                config.temporal.temporal_api_key.clone(),
            )),
            _ => None,
        };
        let problems = [
            parse_with_env(&["trigger-relay", "status"], &[]),
            parse_with_env(
                &[
                    "trigger-relay",
                    "status",
                    "--database-url",
                    "postgres://db/x",
                ],
                &[(secrets::DATABASE_URL_FILE, &url_file)],
            ),
            parse_with_env(
                &["trigger-relay", "status"],
                &[(secrets::DATABASE_URL_FILE, &empty)],
            ),
            parse_with_env(
                &["trigger-relay", "status"],
                &[(secrets::DATABASE_URL_FILE, &missing)],
            ),
            parse_with_env(
                &["trigger-relay", "status"],
                &[(secrets::DATABASE_URL_FILE, &dir)],
            ),
        ]
        .map(|r| r.err().map(|e| e.to_string()).unwrap_or_default());
        let _ = std::fs::remove_dir_all(&dir);

        assert_eq!(
            resolved,
            Some((
                "postgres://relay:s3cret@db/site".to_owned(),
                Some("k3y".to_owned())
            ))
        );
        assert!(problems[0].contains("no database URL"), "{}", problems[0]);
        assert!(problems[1].contains("both set"), "{}", problems[1]);
        assert!(problems[2].contains("empty"), "{}", problems[2]);
        assert!(
            problems[3].contains("TRIGGER_RELAY_DATABASE_URL_FILE=")
                && problems[3].contains("missing"),
            "{}",
            problems[3]
        );
        assert!(
            problems[4].contains("not a regular file"),
            "{}",
            problems[4]
        );
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
