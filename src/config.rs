//! Configuration: parsed once, from flags or `TRIGGER_RELAY_*` environment variables, into
//! typed structs (docs/contract.md lists every variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::outbox::State;

#[derive(Debug, Parser)]
#[command(
    name = "trigger-relay",
    version,
    about = "Relays dj-triggers outbox rows from PostgreSQL to Temporal"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogConfig,
    #[command(subcommand)]
    pub command: Command,
}

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

#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL of the site's database, e.g. postgres://relay@127.0.0.1:5432/site.
    #[arg(long, env = "TRIGGER_RELAY_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Largest number of pooled PostgreSQL connections (the LISTEN connection is extra).
    #[arg(long, env = "TRIGGER_RELAY_DATABASE_POOL_SIZE", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub database_pool_size: u16,
    /// Time allowed to open a PostgreSQL connection or wait for one from the pool.
    #[arg(long, env = "TRIGGER_RELAY_DATABASE_TIMEOUT", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub database_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct TemporalConfig {
    /// Temporal frontend address, e.g. http://127.0.0.1:7233 or https://ns.acct.tmprl.cloud:7233.
    #[arg(
        long,
        env = "TRIGGER_RELAY_TEMPORAL_ADDRESS",
        default_value = "http://127.0.0.1:7233"
    )]
    pub temporal_address: url::Url,
    /// Temporal namespace.
    #[arg(
        long,
        env = "TRIGGER_RELAY_TEMPORAL_NAMESPACE",
        default_value = "default"
    )]
    pub temporal_namespace: String,
    /// Task queue of `trigger_workflow`.
    #[arg(
        long,
        env = "TRIGGER_RELAY_TEMPORAL_TASK_QUEUE",
        default_value = "trigger-relay"
    )]
    pub temporal_task_queue: String,
    /// API key (Temporal Cloud). Enables TLS. Never logged.
    #[arg(long, env = "TRIGGER_RELAY_TEMPORAL_API_KEY", hide_env_values = true)]
    pub temporal_api_key: Option<String>,
    /// PEM file of the CA that signed the server's certificate (self-hosted TLS).
    #[arg(long, env = "TRIGGER_RELAY_TEMPORAL_TLS_CA")]
    pub temporal_tls_ca: Option<PathBuf>,
    /// PEM client certificate for mTLS (with --temporal-tls-key).
    #[arg(
        long,
        env = "TRIGGER_RELAY_TEMPORAL_TLS_CERT",
        requires = "temporal_tls_key"
    )]
    pub temporal_tls_cert: Option<PathBuf>,
    /// PEM client key for mTLS (with --temporal-tls-cert).
    #[arg(
        long,
        env = "TRIGGER_RELAY_TEMPORAL_TLS_KEY",
        requires = "temporal_tls_cert"
    )]
    pub temporal_tls_key: Option<PathBuf>,
    /// Server name to verify the certificate against, if not the address's host.
    #[arg(long, env = "TRIGGER_RELAY_TEMPORAL_TLS_SERVER_NAME")]
    pub temporal_tls_server_name: Option<String>,
    /// Prefix of workflow ids: `{prefix}-{outbox id}-g{generation}`. Give each site sharing a
    /// namespace its own prefix.
    #[arg(
        long,
        env = "TRIGGER_RELAY_WORKFLOW_ID_PREFIX",
        default_value = "trigger-outbox"
    )]
    pub workflow_id_prefix: String,
}

impl TemporalConfig {
    pub fn tls_enabled(&self) -> bool {
        self.temporal_api_key.is_some()
            || self.temporal_tls_ca.is_some()
            || self.temporal_tls_cert.is_some()
            || self.temporal_address.scheme() == "https"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Relay and worker in one process (the sidecar default).
    All,
    /// Only the relay: outbox rows to workflow starts.
    Relay,
    /// Only the worker of trigger_workflow and the outbox activities.
    Worker,
}

impl Mode {
    pub fn relay(self) -> bool {
        matches!(self, Mode::All | Mode::Relay)
    }

    pub fn worker(self) -> bool {
        matches!(self, Mode::All | Mode::Worker)
    }
}

/// The worker's settings: task queues, timeouts and retries of the workflow's activities.
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// Task queue of the Python activity worker (manage.py trigger_relay_worker).
    #[arg(
        long,
        env = "TRIGGER_RELAY_DJANGO_TASK_QUEUE",
        default_value = "trigger-relay-django"
    )]
    pub django_task_queue: String,
    /// Start-to-close timeout of one attempt of the Python perform_firing activity.
    #[arg(long, env = "TRIGGER_RELAY_PERFORM_TIMEOUT", default_value = "5m",
          value_parser = humantime::parse_duration)]
    pub perform_timeout: Duration,
    /// Attempts of perform_firing before the row is recorded `failed` (0 = unlimited).
    #[arg(long, env = "TRIGGER_RELAY_PERFORM_MAX_ATTEMPTS", default_value_t = 10)]
    pub perform_max_attempts: u32,
    /// Start-to-close timeout of one attempt of record_outcome (retried until it succeeds).
    #[arg(long, env = "TRIGGER_RELAY_RECORD_TIMEOUT", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub record_timeout: Duration,
    /// Time in-flight workflow and activity tasks get after SIGTERM.
    #[arg(long, env = "TRIGGER_RELAY_WORKER_SHUTDOWN_TIMEOUT", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub worker_shutdown_timeout: Duration,
    /// How long a workflow task waits on a dead worker's sticky queue before any worker may
    /// take it.
    #[arg(long, env = "TRIGGER_RELAY_STICKY_TIMEOUT", default_value = "3s",
          value_parser = humantime::parse_duration)]
    pub sticky_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct RunConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub temporal: TemporalConfig,
    #[command(flatten)]
    pub worker: WorkerConfig,
    /// What this process runs.
    #[arg(long, env = "TRIGGER_RELAY_MODE", default_value = "all")]
    pub mode: Mode,
    /// LISTEN for the outbox's NOTIFY. `false` = poll only (PgBouncer in transaction mode).
    #[arg(long, env = "TRIGGER_RELAY_LISTEN", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub listen: bool,
    /// Safety-net poll period: a row is picked up within it even without a notification.
    #[arg(long, env = "TRIGGER_RELAY_POLL_INTERVAL", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Rows claimed per query.
    #[arg(long, env = "TRIGGER_RELAY_BATCH_SIZE", default_value_t = 100,
          value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub batch_size: u16,
    /// Claim lease: a row claimed by a replica that died returns to the others after it.
    #[arg(long, env = "TRIGGER_RELAY_LEASE", default_value = "60s",
          value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// Workflow starts in flight at once per replica.
    #[arg(long, env = "TRIGGER_RELAY_MAX_IN_FLIGHT", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=1_024))]
    pub max_in_flight: u16,
    /// Largest workflow input accepted; bigger rows are failed (Temporal's default blob
    /// limit is 2 MiB).
    #[arg(long, env = "TRIGGER_RELAY_MAX_INPUT_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_input_bytes: usize,
    /// First delay after a Temporal or PostgreSQL error; doubles up to the maximum, with jitter.
    #[arg(long, env = "TRIGGER_RELAY_BACKOFF_INITIAL", default_value = "200ms",
          value_parser = humantime::parse_duration)]
    pub backoff_initial: Duration,
    /// Largest delay between retries after errors.
    #[arg(long, env = "TRIGGER_RELAY_BACKOFF_MAX", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub backoff_max: Duration,
    /// Address of the HTTP endpoint: /metrics, /healthz, /readyz.
    #[arg(
        long,
        env = "TRIGGER_RELAY_METRICS_ADDR",
        default_value = "127.0.0.1:9187"
    )]
    pub metrics_addr: SocketAddr,
    /// How often the backlog gauges are refreshed.
    #[arg(long, env = "TRIGGER_RELAY_STATS_INTERVAL", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub stats_interval: Duration,
    /// Time in-flight starts get to finish after SIGTERM before their claims are released.
    #[arg(long, env = "TRIGGER_RELAY_SHUTDOWN_TIMEOUT", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// Delete done, skipped and cancelled rows this long after they finished (e.g. `30d`);
    /// unset keeps them. Failed rows are never deleted.
    #[arg(long, env = "TRIGGER_RELAY_RETENTION", value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,
    /// How often retention runs.
    #[arg(long, env = "TRIGGER_RELAY_RETENTION_INTERVAL", default_value = "10m",
          value_parser = humantime::parse_duration)]
    pub retention_interval: Duration,
    /// Name of this replica in `claimed_by` (default: hostname-pid).
    #[arg(long, env = "TRIGGER_RELAY_REPLICA")]
    pub replica: Option<String>,
}

impl RunConfig {
    /// Checks what clap cannot: relations between values.
    pub fn validate(&self) -> Result<(), String> {
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
        // Temporal refuses over-long ids with InvalidArgument, which the relay treats as a
        // row that can never start: catch the misconfiguration before it fails every row.
        let prefix = &self.temporal.workflow_id_prefix;
        if prefix.is_empty() || prefix.len() > 200 {
            return Err("TRIGGER_RELAY_WORKFLOW_ID_PREFIX must be 1 to 200 bytes long".into());
        }
        Ok(())
    }

    pub fn replica_name(&self) -> String {
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
    pub database: DatabaseConfig,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// How many recent failures to show.
    #[arg(long, default_value_t = 10)]
    pub failures: i64,
}

#[derive(Debug, Args)]
pub struct ReplayConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Row ids (repeat or comma-separate).
    #[arg(long = "id", value_delimiter = ',')]
    pub ids: Vec<i64>,
    /// Id range, inclusive: `100..200`, `100..` or `..200`.
    #[arg(long, value_parser = parse_id_range)]
    pub id_range: Option<IdRange>,
    /// Rows in these states (repeat or comma-separate).
    #[arg(long = "state", value_delimiter = ',')]
    pub states: Vec<State>,
    /// Rows of these trigger ids.
    #[arg(long = "trigger", value_delimiter = ',')]
    pub triggers: Vec<i64>,
    /// Rows created at or after this time (RFC 3339).
    #[arg(long)]
    pub created_after: Option<DateTime<Utc>>,
    /// Rows created before this time (RFC 3339).
    #[arg(long)]
    pub created_before: Option<DateTime<Utc>>,
    /// Also replay rows still `dispatched` (their first workflow may still be running).
    #[arg(long)]
    pub include_dispatched: bool,
    /// List what would be replayed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl ReplayConfig {
    pub fn has_selector(&self) -> bool {
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
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub temporal: TemporalConfig,
    /// Row ids (repeat or comma-separate).
    #[arg(long = "id", value_delimiter = ',')]
    pub ids: Vec<i64>,
    /// Rows of these trigger ids.
    #[arg(long = "trigger", value_delimiter = ',')]
    pub triggers: Vec<i64>,
    /// Rows of these user primary keys.
    #[arg(long = "user", value_delimiter = ',')]
    pub users: Vec<String>,
    /// List what would be cancelled; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayHistoriesConfig {
    #[command(flatten)]
    pub temporal: TemporalConfig,
    #[command(flatten)]
    pub worker: WorkerConfig,
    /// Visibility query choosing the histories.
    #[arg(long, default_value = "WorkflowType = 'trigger_workflow'")]
    pub query: String,
    /// At most this many histories, most recent first.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Also write each fetched history as JSON into this directory (to record fixtures).
    #[arg(long, conflicts_with = "dir")]
    pub save_dir: Option<PathBuf>,
    /// Replay the `*.json` histories of this directory instead of fetching from a server.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
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
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
