//! PostgreSQL access: the connection target (URL and TLS), the pool, and one typed function
//! per statement of `sql/queries/`.
//!
//! Every statement goes through [`Db`], which
//! - sends it unnamed with its parameter types (`query_typed`): nothing is prepared on the
//!   server connection, so the daemon works behind PgBouncer in transaction mode;
//! - bounds it by `TRIGGER_RELAY_DATABASE_STATEMENT_TIMEOUT` and drops a connection that did
//!   not answer in time instead of returning it to the pool;
//! - records its duration and errors in the metrics;
//! - decodes with `try_get`: a value that cannot be decoded is an error naming the column,
//!   never a panic.

pub mod tls;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql, Type};

use crate::config::DatabaseConfig;
use crate::metrics::Metrics;
use crate::outbox::{BadPayload, ClaimedRow, Outcome, PoisonRow, State, UndecodableRow};
use tls::{MakeRustlsConnect, TlsError, TlsSettings};

/// The outbox schema version this build reads and writes (sql/schema/).
pub const SCHEMA_VERSION: i32 = 7;

mod sql {
    pub const SCHEMA_VERSION: &str = include_str!("../../sql/queries/schema_version.sql");
    pub const CLAIM: &str = include_str!("../../sql/queries/claim.sql");
    pub const MARK_DISPATCHED: &str = include_str!("../../sql/queries/mark_dispatched.sql");
    pub const MARK_FAILED: &str = include_str!("../../sql/queries/mark_failed.sql");
    pub const RELEASE_CLAIM: &str = include_str!("../../sql/queries/release_claim.sql");
    pub const RELEASE_ORPHANED_CLAIMS: &str =
        include_str!("../../sql/queries/release_orphaned_claims.sql");
    pub const BACKLOG: &str = include_str!("../../sql/queries/backlog.sql");
    pub const STATUS_COUNTS: &str = include_str!("../../sql/queries/status_counts.sql");
    pub const STATUS_FAILURES: &str = include_str!("../../sql/queries/status_failures.sql");
    pub const SELECT_FOR_REPLAY: &str = include_str!("../../sql/queries/select_for_replay.sql");
    pub const REPLAY_ROW: &str = include_str!("../../sql/queries/replay_row.sql");
    pub const CANCEL_PENDING: &str = include_str!("../../sql/queries/cancel_pending.sql");
    pub const SELECT_FOR_CANCEL: &str = include_str!("../../sql/queries/select_for_cancel.sql");
    pub const DELETE_FINISHED: &str = include_str!("../../sql/queries/delete_finished.sql");
    pub const RECORD_OUTCOME: &str = include_str!("../../sql/queries/record_outcome.sql");
    pub const RECONCILE_CLAIM: &str = include_str!("../../sql/queries/reconcile_claim.sql");
    pub const RECONCILE_FAIL: &str = include_str!("../../sql/queries/reconcile_fail.sql");
    pub const DISPATCHED_OVERDUE: &str = include_str!("../../sql/queries/dispatched_overdue.sql");
    pub const TRIGGER_NAMES: &str = include_str!("../../sql/queries/trigger_names.sql");
    pub const SITE_ID: &str = include_str!("../../sql/queries/site_id.sql");
}

pub const NOTIFY_CHANNEL: &str = "trigger_relay_outbox";

/// Rows replayed per transaction: a replay of a whole trigger's history must not hold a
/// million row locks in one transaction next to the site's traffic.
const REPLAY_BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid TRIGGER_RELAY_DATABASE_URL: {0}")]
    BadUrl(String),
    #[error("invalid TLS settings in TRIGGER_RELAY_DATABASE_URL: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot register the query metrics: {0}")]
    Metrics(String),
    #[error("cannot build the PostgreSQL pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
    #[error("cannot connect to PostgreSQL at {target}: {detail}")]
    Connection { target: Arc<str>, detail: String },
    #[error(
        "no free PostgreSQL connection in the pool within TRIGGER_RELAY_DATABASE_TIMEOUT; \
         raise TRIGGER_RELAY_DATABASE_POOL_SIZE"
    )]
    PoolExhausted,
    #[error("PostgreSQL query {query} did not answer within {after:?}; connection dropped")]
    Timeout {
        query: &'static str,
        after: Duration,
    },
    #[error("PostgreSQL query {query} failed: {detail}")]
    Query {
        query: &'static str,
        detail: String,
        source: tokio_postgres::Error,
    },
    #[error("PostgreSQL query {query}: cannot decode column {column}: {detail}")]
    Decode {
        query: &'static str,
        column: &'static str,
        detail: String,
    },
    #[error(
        "the outbox schema is not installed in this database ({0}); run \
         `python manage.py migrate trigger_relay` or apply sql/schema/*.sql with psql"
    )]
    SchemaMissing(String),
    #[error(
        "the database has outbox schema version {found:?} but this trigger-relay needs \
         version {expected}; {hint}"
    )]
    SchemaMismatch {
        found: Option<i32>,
        expected: i32,
        hint: &'static str,
    },
    #[error(
        "trigger_relay_site holds {rows} rows, not one: restore its row (schema version 7 \
         creates it) or set TRIGGER_RELAY_SITE"
    )]
    SiteMissing { rows: usize },
}

impl DbError {
    /// True for errors that say nothing about reachability (a bad statement, a bad value):
    /// they must not flip readiness.
    pub fn is_connectivity(&self) -> bool {
        match self {
            DbError::Connection { .. } | DbError::Timeout { .. } => true,
            DbError::Query { source, .. } => source.is_closed() || source.as_db_error().is_none(),
            _ => false,
        }
    }
}

fn query_error(query: &'static str) -> impl FnOnce(tokio_postgres::Error) -> DbError {
    move |source| DbError::Query {
        query,
        detail: pg_detail(&source),
        source,
    }
}

/// tokio-postgres displays a server error as just "db error"; the server's own message is
/// what an operator needs. Other errors (I/O, TLS) carry their cause in the source chain.
pub(crate) fn pg_detail(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                message = format!("{message}: {cause}");
                source = cause.source();
            }
            message
        }
    }
}

/// Where the daemon's connections go: the parsed URL (password never displayed), its TLS
/// settings and the rustls connector. The pool and the LISTEN connection share one.
#[derive(Clone)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    pub tls_settings: TlsSettings,
    description: Arc<str>,
}

impl PgTarget {
    pub fn new(config: &DatabaseConfig) -> Result<Self, DbError> {
        let (conninfo, tls_settings, driver_mode) =
            tls::split(&config.database_url, |var| std::env::var(var).ok())?;
        // tokio-postgres' parse errors never echo the string, so the password stays out.
        let mut pg = tokio_postgres::Config::from_str(&conninfo)
            .map_err(|e| DbError::BadUrl(e.to_string()))?;
        pg.ssl_mode(driver_mode);
        if pg.get_application_name().is_none() {
            pg.application_name("trigger-relay");
        }
        pg.connect_timeout(config.database_timeout);
        // A dead peer is found by the kernel: keepalives while idle, the user timeout while
        // data waits for an acknowledgement. Without them a dropped path costs ~15 minutes.
        pg.keepalives(true)
            .keepalives_idle(Duration::from_secs(15))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        if !config.database_tcp_user_timeout.is_zero() {
            pg.tcp_user_timeout(config.database_tcp_user_timeout);
        }
        let tls = tls::connector(&tls_settings)?;
        let description = format!("{} ({tls_settings})", describe(&pg)).into();
        Ok(Self {
            config: pg,
            tls,
            tls_settings,
            description,
        })
    }

    /// Host, port and database, with the TLS settings; never the password.
    pub fn describe(&self) -> Arc<str> {
        self.description.clone()
    }

    fn connection_error(&self, error: &tokio_postgres::Error) -> DbError {
        DbError::Connection {
            target: self.describe(),
            detail: pg_detail(error),
        }
    }
}

fn describe(pg: &tokio_postgres::Config) -> String {
    let ports = pg.get_ports();
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match ports.get(i).or(ports.first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    format!(
        "{}/{}",
        hosts.join(","),
        pg.get_dbname().unwrap_or("(default)")
    )
}

/// A statement parameter with its type: sent unnamed, so nothing is prepared.
type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// The pool, its bounds and its metrics.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    target: PgTarget,
    metrics: Metrics,
    statement_timeout: Duration,
}

impl Db {
    pub fn new(
        target: &PgTarget,
        config: &DatabaseConfig,
        pool_size: usize,
        metrics: Metrics,
    ) -> Result<Self, DbError> {
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .wait_timeout(Some(config.database_timeout))
            .create_timeout(Some(config.database_timeout))
            .recycle_timeout(Some(config.database_timeout))
            .runtime(Runtime::Tokio1)
            .build()?;
        Ok(Self {
            pool,
            target: target.clone(),
            metrics,
            statement_timeout: config.database_statement_timeout,
        })
    }

    /// The small pool of a one-shot command (status, replay, cancel).
    pub fn for_command(config: &DatabaseConfig) -> Result<Self, DbError> {
        let metrics = Metrics::new().map_err(|e| DbError::Metrics(e.to_string()))?;
        Self::new(&PgTarget::new(config)?, config, 2, metrics)
    }

    async fn client(&self) -> Result<Object, DbError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(err) => self.target.connection_error(&err),
            // Every connection busy: contention in this process, not an unreachable
            // database, so it does not flip readiness.
            deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                DbError::PoolExhausted
            }
            deadpool_postgres::PoolError::Timeout(kind) => DbError::Connection {
                target: self.target.describe(),
                detail: format!(
                    "no connection within TRIGGER_RELAY_DATABASE_TIMEOUT ({kind:?}): the \
                     database is slow or unreachable"
                ),
            },
            other => DbError::Connection {
                target: self.target.describe(),
                detail: other.to_string(),
            },
        })
    }

    /// Runs one statement, bounded, measured, unnamed.
    async fn rows(
        &self,
        query: &'static str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>, DbError> {
        let started = Instant::now();
        let result = async {
            let client = self.client().await?;
            let answer =
                tokio::time::timeout(self.statement_timeout, client.query_typed(sql, params)).await;
            self.settle(query, client, answer)
        }
        .await;
        self.observe(query, started, &result);
        result
    }

    /// The answer of a bounded call. A connection that did not answer in time is taken out
    /// of the pool and closed, never handed to the next caller.
    fn settle<T>(
        &self,
        query: &'static str,
        client: Object,
        answer: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
    ) -> Result<T, DbError> {
        match answer {
            Ok(result) => result.map_err(query_error(query)),
            Err(_) => {
                drop(Object::take(client));
                Err(DbError::Timeout {
                    query,
                    after: self.statement_timeout,
                })
            }
        }
    }

    fn observe<T>(&self, query: &'static str, started: Instant, result: &Result<T, DbError>) {
        self.metrics
            .postgres_duration
            .with_label_values(&[query])
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.metrics
                .postgres_errors
                .with_label_values(&[query])
                .inc();
        }
    }
}

/// Decodes one column, naming it if the value cannot be decoded.
fn column<'a, T: FromSql<'a>>(
    row: &'a Row,
    query: &'static str,
    column: &'static str,
) -> Result<T, DbError> {
    row.try_get(column).map_err(|e| DbError::Decode {
        query,
        column,
        detail: e.to_string(),
    })
}

impl Db {
    /// Refuses to run against a schema this build does not know (guarantees §1.1).
    pub async fn check_schema(&self) -> Result<(), DbError> {
        let rows = self
            .rows("schema_version", sql::SCHEMA_VERSION, &[])
            .await
            .map_err(|e| match e {
                DbError::Query { source, .. }
                    if source.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
                {
                    DbError::SchemaMissing(pg_detail(&source))
                }
                other => other,
            })?;
        let found: Option<i32> = match rows.first() {
            Some(row) => column(row, "schema_version", "max")?,
            None => None,
        };
        match found {
            Some(v) if v == SCHEMA_VERSION => Ok(()),
            Some(v) if v > SCHEMA_VERSION => Err(DbError::SchemaMismatch {
                found,
                expected: SCHEMA_VERSION,
                hint: "upgrade trigger-relay to the release that matches the Django add-on",
            }),
            _ => Err(DbError::SchemaMismatch {
                found,
                expected: SCHEMA_VERSION,
                hint: "run `python manage.py migrate trigger_relay` (or apply the missing \
                       sql/schema/*.sql files) with the add-on of this release",
            }),
        }
    }

    /// The site identity of this database (`trigger_relay_site`, schema version 7).
    pub async fn site_id(&self) -> Result<String, DbError> {
        let rows = self.rows("site_id", sql::SITE_ID, &[]).await?;
        match rows.as_slice() {
            [row] => column(row, "site_id", "id"),
            _ => Err(DbError::SiteMissing { rows: rows.len() }),
        }
    }

    /// Claims up to `limits.rows` rows holding at most `limits.batch_bytes` bytes of context
    /// between them (or one row, if alone larger), and writes on each the id of the workflow
    /// it is about to start (`workflow_id_prefix`). Each comes back decoded, or as the
    /// poison row it is (the caller fails it alone), oldest first; a row whose context is
    /// over `limits.row_bytes` comes back as such without its context, which PostgreSQL
    /// measured and kept (sql/queries/claim.sql).
    pub async fn claim(
        &self,
        limits: ClaimLimits,
        replica: &str,
        lease: Duration,
        workflow_id_prefix: &str,
    ) -> Result<Claim, DbError> {
        const Q: &str = "claim";
        let lease = lease.as_secs_f64();
        let row_bytes = i32::try_from(limits.row_bytes).unwrap_or(i32::MAX);
        let batch_bytes = i64::try_from(limits.batch_bytes).unwrap_or(i64::MAX);
        let rows = self
            .rows(
                Q,
                sql::CLAIM,
                &[
                    (&limits.rows, Type::INT8),
                    (&replica, Type::TEXT),
                    (&lease, Type::FLOAT8),
                    (&row_bytes, Type::INT4),
                    (&batch_bytes, Type::INT8),
                    (&workflow_id_prefix, Type::TEXT),
                ],
            )
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        let mut candidates = 0i64;
        for row in &rows {
            // The key columns are NOT NULL integers; without them no row can be named.
            let id: i64 = column(row, Q, "id")?;
            let generation: i32 = column(row, Q, "generation")?;
            candidates = column(row, Q, "candidates")?;
            let size: i32 = column(row, Q, "context_bytes")?;
            if size > row_bytes {
                claimed.push(Err(PoisonRow::Oversize {
                    id,
                    generation,
                    problem: BadPayload::ContextTooLarge {
                        size: i64::from(size),
                        limit: limits.row_bytes,
                    },
                }));
            } else {
                claimed.push(decode_claimed(row, id, generation).map_err(PoisonRow::Undecodable));
            }
        }
        // The rows' buffers go before the batch is handed on: the decoded rows hold their
        // own copies of the contexts.
        drop(rows);
        // UPDATE ... RETURNING does not keep the CTE's order; start oldest first.
        claimed.sort_by_key(|r| match r {
            Ok(row) => row.id,
            Err(bad) => bad.id(),
        });
        Ok(Claim {
            rows: claimed,
            locked: candidates,
        })
    }

    /// The names of these triggers (dj-triggers' table), for the workflows' memo and search
    /// attributes. A trigger deleted meanwhile is absent from the map.
    pub async fn trigger_names(
        &self,
        trigger_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, String>, DbError> {
        if trigger_ids.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let ids = trigger_ids.to_vec();
        let rows = self
            .rows(
                "trigger_names",
                sql::TRIGGER_NAMES,
                &[(&ids, Type::INT8_ARRAY)],
            )
            .await?;
        let mut names = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = column(row, "trigger_names", "id")?;
            let name: Option<String> = column(row, "trigger_names", "name")?;
            if let Some(name) = name {
                names.insert(id, name);
            }
        }
        Ok(names)
    }

    /// Marks the started rows of one batch dispatched; returns (id, commit-to-start seconds)
    /// for the rows that were still pending.
    pub async fn mark_dispatched(&self, started: &[Started]) -> Result<Vec<(i64, f64)>, DbError> {
        if started.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = started.iter().map(|s| s.id).collect();
        let generations: Vec<i32> = started.iter().map(|s| s.generation).collect();
        let workflow_ids: Vec<&str> = started.iter().map(|s| s.workflow_id.as_str()).collect();
        let run_ids: Vec<Option<&str>> = started.iter().map(|s| s.run_id.as_deref()).collect();
        let started_at: Vec<DateTime<Utc>> = started.iter().map(|s| s.started_at).collect();
        let rows = self
            .rows(
                "mark_dispatched",
                sql::MARK_DISPATCHED,
                &[
                    (&ids, Type::INT8_ARRAY),
                    (&generations, Type::INT4_ARRAY),
                    (&workflow_ids, Type::TEXT_ARRAY),
                    (&run_ids, Type::TEXT_ARRAY),
                    (&started_at, Type::TIMESTAMPTZ_ARRAY),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = column(r, "mark_dispatched", "id")?;
                let latency: Option<f64> = column(r, "mark_dispatched", "commit_to_start")?;
                Ok((id, latency.unwrap_or(0.0)))
            })
            .collect()
    }

    pub async fn mark_failed(
        &self,
        id: i64,
        generation: i32,
        error: &str,
    ) -> Result<bool, DbError> {
        let rows = self
            .rows(
                "mark_failed",
                sql::MARK_FAILED,
                &[
                    (&id, Type::INT8),
                    (&generation, Type::INT4),
                    (&error, Type::TEXT),
                ],
            )
            .await?;
        Ok(rows.len() == 1)
    }

    pub async fn release_claim(
        &self,
        row: &ClaimedRow,
        replica: &str,
        error: &str,
    ) -> Result<(), DbError> {
        self.rows(
            "release_claim",
            sql::RELEASE_CLAIM,
            &[
                (&row.id, Type::INT8),
                (&row.generation, Type::INT4),
                (&replica, Type::TEXT),
                (&error, Type::TEXT),
            ],
        )
        .await?;
        Ok(())
    }

    /// Hands back the claims `replica` holds with nothing in flight; returns how many.
    pub async fn release_orphaned_claims(&self, replica: &str) -> Result<usize, DbError> {
        let rows = self
            .rows(
                "release_orphaned_claims",
                sql::RELEASE_ORPHANED_CLAIMS,
                &[(&replica, Type::TEXT)],
            )
            .await?;
        Ok(rows.len())
    }

    pub async fn backlog(&self) -> Result<Backlog, DbError> {
        let rows = self.rows("backlog", sql::BACKLOG, &[]).await?;
        let r = rows.first().ok_or(DbError::Decode {
            query: "backlog",
            column: "pending",
            detail: "no row returned".into(),
        })?;
        Ok(Backlog {
            pending: column(r, "backlog", "pending")?,
            oldest_pending_age: column(r, "backlog", "oldest_pending_age")?,
            failed: column(r, "backlog", "failed")?,
        })
    }

    pub async fn status(&self, failures: i64) -> Result<(Vec<StateCount>, Vec<Failure>), DbError> {
        const Q: &str = "status";
        let counts = self
            .rows("status_counts", sql::STATUS_COUNTS, &[])
            .await?
            .iter()
            .map(|r| {
                Ok(StateCount {
                    state: column(r, Q, "state")?,
                    rows: column(r, Q, "rows")?,
                    oldest_age_seconds: column(r, Q, "oldest_age_seconds")?,
                })
            })
            .collect::<Result<_, DbError>>()?;
        let failures = self
            .rows(
                "status_failures",
                sql::STATUS_FAILURES,
                &[(&failures, Type::INT8)],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(Failure {
                    id: column(r, Q, "id")?,
                    trigger_id: column(r, Q, "trigger_id")?,
                    event_id: column(r, Q, "event_id")?,
                    user_pk: column(r, Q, "user_pk")?,
                    attempts: column(r, Q, "attempts")?,
                    // An operator's `infinity` must not hide every other failure.
                    finished_at: r.try_get("finished_at").ok().flatten(),
                    last_error: column(r, Q, "last_error")?,
                })
            })
            .collect::<Result<_, DbError>>()?;
        Ok((counts, failures))
    }

    /// Selects rows for a replay (no locks: a dry run changes nothing, and listing waits on
    /// nobody); unless `dry_run`, moves them back to pending with the next generation in
    /// transactions of at most [`REPLAY_BATCH`] rows, each re-checking the selection's
    /// state guards, and wakes the relays.
    pub async fn replay(
        &self,
        selection: &ReplaySelection,
        dry_run: bool,
    ) -> Result<Vec<ReplayCandidate>, DbError> {
        const Q: &str = "select_for_replay";
        let states: Option<Vec<&str>> = selection
            .states
            .as_ref()
            .map(|s| s.iter().map(|state| state.as_str()).collect());
        let rows = self
            .rows(
                Q,
                sql::SELECT_FOR_REPLAY,
                &[
                    (&selection.ids, Type::INT8_ARRAY),
                    (&selection.id_from, Type::INT8),
                    (&selection.id_to, Type::INT8),
                    (&states, Type::TEXT_ARRAY),
                    (&selection.triggers, Type::INT8_ARRAY),
                    (&selection.created_after, Type::TIMESTAMPTZ),
                    (&selection.created_before, Type::TIMESTAMPTZ),
                    (&selection.include_dispatched, Type::BOOL),
                ],
            )
            .await?;
        let mut candidates = rows
            .iter()
            .map(|r| {
                let generation: i32 = column(r, Q, "generation")?;
                Ok(ReplayCandidate {
                    id: column(r, Q, "id")?,
                    state: column(r, Q, "state")?,
                    generation,
                    new_generation: generation + 1,
                    trigger_id: column(r, Q, "trigger_id")?,
                    event_id: column(r, Q, "event_id")?,
                    user_pk: column(r, Q, "user_pk")?,
                    created_at: r.try_get("created_at").ok(),
                    workflow_id: column(r, Q, "workflow_id")?,
                    replayed: !dry_run,
                })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        if dry_run || candidates.is_empty() {
            return Ok(candidates);
        }
        let mut replayed = std::collections::HashSet::new();
        for chunk in candidates.chunks(REPLAY_BATCH) {
            let ids: Vec<i64> = chunk.iter().map(|c| c.id).collect();
            let rows = self
                .rows(
                    "replay_row",
                    sql::REPLAY_ROW,
                    &[
                        (&ids, Type::INT8_ARRAY),
                        (&selection.include_dispatched, Type::BOOL),
                    ],
                )
                .await?;
            for r in &rows {
                replayed.insert(column::<i64>(r, "replay_row", "id")?);
            }
        }
        for candidate in &mut candidates {
            candidate.replayed = replayed.contains(&candidate.id);
        }
        // Replayed rows are updates, which the insert trigger does not announce.
        self.notify().await?;
        Ok(candidates)
    }

    async fn notify(&self) -> Result<(), DbError> {
        let client = self.client().await?;
        let answer = tokio::time::timeout(
            self.statement_timeout,
            client.batch_execute(&format!("NOTIFY {NOTIFY_CHANNEL}")),
        )
        .await;
        self.settle("notify", client, answer)
    }

    /// Records a workflow's outcome; false if the row had moved on (replayed, cancelled,
    /// recorded by an earlier attempt) or belongs to another firing.
    pub async fn record_outcome(
        &self,
        outcome: &Outcome,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<bool, DbError> {
        let state = outcome.state.as_str();
        let rows = self
            .rows(
                "record_outcome",
                sql::RECORD_OUTCOME,
                &[
                    (&outcome.outbox_id, Type::INT8),
                    (&outcome.generation, Type::INT4),
                    (&state, Type::TEXT),
                    (&outcome.reason, Type::TEXT),
                    (&outcome.error, Type::TEXT),
                    (&outcome.firing_uuid, Type::TEXT),
                    (&workflow_id, Type::TEXT),
                    (&run_id, Type::TEXT),
                ],
            )
            .await?;
        Ok(rows.len() == 1)
    }

    /// The pending and dispatched rows a cancel would touch.
    pub async fn select_for_cancel(
        &self,
        selection: &CancelSelection,
    ) -> Result<Vec<CancelCandidate>, DbError> {
        const Q: &str = "select_for_cancel";
        self.rows(
            Q,
            sql::SELECT_FOR_CANCEL,
            &[
                (&selection.ids, Type::INT8_ARRAY),
                (&selection.triggers, Type::INT8_ARRAY),
                (&selection.users, Type::TEXT_ARRAY),
            ],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(CancelCandidate {
                id: column(r, Q, "id")?,
                state: column(r, Q, "state")?,
                trigger_id: column(r, Q, "trigger_id")?,
                user_pk: column(r, Q, "user_pk")?,
                workflow_id: column(r, Q, "workflow_id")?,
            })
        })
        .collect()
    }

    /// Cancels the selected pending rows; returns their ids.
    pub async fn cancel_pending(
        &self,
        selection: &CancelSelection,
        dry_run: bool,
    ) -> Result<Vec<i64>, DbError> {
        self.rows(
            "cancel_pending",
            sql::CANCEL_PENDING,
            &[
                (&selection.ids, Type::INT8_ARRAY),
                (&selection.triggers, Type::INT8_ARRAY),
                (&selection.users, Type::TEXT_ARRAY),
                (&dry_run, Type::BOOL),
            ],
        )
        .await?
        .iter()
        .map(|r| column(r, "cancel_pending", "id"))
        .collect()
    }

    /// Deletes up to `batch` rows finished longer than `keep_for` ago; returns how many.
    pub async fn delete_finished(&self, keep_for: Duration, batch: i64) -> Result<u64, DbError> {
        let keep_for = keep_for.as_secs_f64();
        let rows = self
            .rows(
                "delete_finished",
                sql::DELETE_FINISHED,
                &[(&keep_for, Type::FLOAT8), (&batch, Type::INT8)],
            )
            .await?;
        let deleted: i64 = match rows.first() {
            Some(r) => column(r, "delete_finished", "count")?,
            None => 0,
        };
        Ok(u64::try_from(deleted).unwrap_or(0))
    }
}

/// A dispatched row the reconciler looks at.
#[derive(Debug, Clone)]
pub struct DispatchedRow {
    pub id: i64,
    pub generation: i32,
    pub workflow_id: Option<String>,
    pub firing_uuid: Option<String>,
}

impl Db {
    /// Claims up to `limit` rows dispatched longer than `after` ago and not looked at for as
    /// long; they are not handed out again for `after`.
    pub async fn reconcile_claim(
        &self,
        limit: i64,
        after: Duration,
        replica: &str,
    ) -> Result<Vec<DispatchedRow>, DbError> {
        const Q: &str = "reconcile_claim";
        let after = after.as_secs_f64();
        self.rows(
            Q,
            sql::RECONCILE_CLAIM,
            &[
                (&limit, Type::INT8),
                (&after, Type::FLOAT8),
                (&replica, Type::TEXT),
            ],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(DispatchedRow {
                id: column(r, Q, "id")?,
                generation: column(r, Q, "generation")?,
                workflow_id: column(r, Q, "workflow_id")?,
                firing_uuid: column(r, Q, "firing_uuid")?,
            })
        })
        .collect()
    }

    /// dispatched -> failed for a row whose workflow closed without recording.
    pub async fn reconcile_fail(
        &self,
        row: &DispatchedRow,
        workflow_id: &str,
        error: &str,
    ) -> Result<bool, DbError> {
        let rows = self
            .rows(
                "reconcile_fail",
                sql::RECONCILE_FAIL,
                &[
                    (&row.id, Type::INT8),
                    (&row.generation, Type::INT4),
                    (&workflow_id, Type::TEXT),
                    (&error, Type::TEXT),
                ],
            )
            .await?;
        Ok(rows.len() == 1)
    }

    /// Dispatched rows, and those due more than `margin` ago.
    pub async fn dispatched_overdue(&self, margin: Duration) -> Result<(i64, i64), DbError> {
        let margin = margin.as_secs_f64();
        let rows = self
            .rows(
                "dispatched_overdue",
                sql::DISPATCHED_OVERDUE,
                &[(&margin, Type::FLOAT8)],
            )
            .await?;
        match rows.first() {
            Some(r) => Ok((
                column(r, "dispatched_overdue", "dispatched")?,
                column(r, "dispatched_overdue", "overdue")?,
            )),
            None => Ok((0, 0)),
        }
    }
}

/// Decodes a claimed row's columns; a value that cannot be decoded (an `infinity`
/// timestamp, a NULL where none belongs) makes the row undecodable, naming the column.
fn decode_claimed(row: &Row, id: i64, generation: i32) -> Result<ClaimedRow, UndecodableRow> {
    let bad = |column: &'static str, error: tokio_postgres::Error| UndecodableRow {
        id,
        generation,
        column,
        detail: match std::error::Error::source(&error) {
            Some(cause) => cause.to_string(),
            None => error.to_string(),
        },
    };
    Ok(ClaimedRow {
        id,
        generation,
        firing_uuid: row
            .try_get("firing_uuid")
            .map_err(|e| bad("firing_uuid", e))?,
        event_id: row.try_get("event_id").map_err(|e| bad("event_id", e))?,
        trigger_id: row
            .try_get("trigger_id")
            .map_err(|e| bad("trigger_id", e))?,
        user_pk: row.try_get("user_pk").map_err(|e| bad("user_pk", e))?,
        context: row.try_get("context").map_err(|e| bad("context", e))?,
        created_at: row
            .try_get("created_at")
            .map_err(|e| bad("created_at", e))?,
        due_at: row.try_get("due_at").map_err(|e| bad("due_at", e))?,
        attempts: row.try_get("attempts").map_err(|e| bad("attempts", e))?,
        workflow_id: row
            .try_get("workflow_id")
            .map_err(|e| bad("workflow_id", e))?,
    })
}

/// What one claim may take.
#[derive(Debug, Clone, Copy)]
pub struct ClaimLimits {
    /// TRIGGER_RELAY_BATCH_SIZE.
    pub rows: i64,
    /// TRIGGER_RELAY_MAX_INPUT_BYTES: a context larger than this is not returned.
    pub row_bytes: usize,
    /// TRIGGER_RELAY_CLAIM_MAX_BYTES: the contexts of one batch together.
    pub batch_bytes: u64,
}

/// One claim's rows, and how many it locked.
#[derive(Debug)]
pub struct Claim {
    pub rows: Vec<Result<ClaimedRow, PoisonRow>>,
    /// Rows the claim locked: its row limit when more may be waiting; more than it returned
    /// when it stopped at the byte budget, the others left pending.
    pub locked: i64,
}

impl Claim {
    /// The claim stopped at the byte budget before the rows it locked.
    pub fn cut(&self) -> bool {
        i64::try_from(self.rows.len()).is_ok_and(|returned| returned < self.locked)
    }
}

/// A row whose workflow start Temporal accepted (or had already accepted).
#[derive(Debug, Clone)]
pub struct Started {
    pub id: i64,
    pub generation: i32,
    pub workflow_id: String,
    pub run_id: Option<String>,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy)]
pub struct Backlog {
    pub pending: i64,
    pub oldest_pending_age: Option<f64>,
    pub failed: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StateCount {
    pub state: String,
    pub rows: i64,
    pub oldest_age_seconds: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    pub id: i64,
    pub trigger_id: i64,
    pub event_id: i64,
    pub user_pk: String,
    pub attempts: i32,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// What a replay selects; `None`/empty means "any".
#[derive(Debug, Default)]
pub struct ReplaySelection {
    pub ids: Option<Vec<i64>>,
    pub id_from: Option<i64>,
    pub id_to: Option<i64>,
    pub states: Option<Vec<State>>,
    pub triggers: Option<Vec<i64>>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub include_dispatched: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayCandidate {
    pub id: i64,
    pub state: String,
    pub generation: i32,
    pub new_generation: i32,
    pub trigger_id: i64,
    pub event_id: i64,
    pub user_pk: String,
    pub created_at: Option<DateTime<Utc>>,
    pub workflow_id: Option<String>,
    /// False for a dry run, and for a row that changed state between listing and replaying.
    pub replayed: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CancelCandidate {
    pub id: i64,
    pub state: String,
    pub trigger_id: i64,
    pub user_pk: String,
    pub workflow_id: Option<String>,
}

/// What a cancel selects; `None` means "any" (the CLI demands at least one selector).
#[derive(Debug, Default)]
pub struct CancelSelection {
    pub ids: Option<Vec<i64>>,
    pub triggers: Option<Vec<i64>>,
    pub users: Option<Vec<String>>,
}
