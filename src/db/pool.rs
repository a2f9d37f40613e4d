//! The connection side of [`Db`]: where connections go ([`PgTarget`]), the pool, the bounds
//! on every statement and the metrics each one records. The statements themselves are in
//! the sibling modules, one per area (see `db/mod.rs`).
//!
//! Every statement goes through [`Db::rows`], which
//! - sends it unnamed with its parameter types (`query_typed`): nothing is prepared on the
//!   server connection, so the daemon works behind PgBouncer in transaction mode;
//! - bounds it by `TRIGGER_RELAY_DATABASE_STATEMENT_TIMEOUT` and drops a connection that did
//!   not answer in time instead of returning it to the pool;
//! - records its duration and errors in the metrics;
//! - decodes with [`column`] (`try_get`): a value that cannot be decoded is an error naming
//!   the column, never a panic.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql, Type};

use super::NOTIFY_CHANNEL;
use super::tls::{self, MakeRustlsConnect, TlsError};
use crate::config::DatabaseConfig;
use crate::metrics::Metrics;

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

/// Where the daemon's connections go: the parsed URL (password never displayed) and the
/// rustls connector for its TLS settings (which [`PgTarget::describe`] names). The pool and the LISTEN connection share one.
#[derive(Clone)]
pub struct PgTarget {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: MakeRustlsConnect,
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
pub(super) type Param<'a> = (&'a (dyn ToSql + Sync), Type);

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

    pub(super) async fn client(&self) -> Result<Object, DbError> {
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
    pub(super) async fn rows(
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
    pub(super) fn settle<T>(
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

    /// Wakes the relays (`NOTIFY`): rows moved back to pending are updates, which the
    /// insert trigger does not announce.
    pub(super) async fn notify(&self) -> Result<(), DbError> {
        let client = self.client().await?;
        let answer = tokio::time::timeout(
            self.statement_timeout,
            client.batch_execute(&format!("NOTIFY {NOTIFY_CHANNEL}")),
        )
        .await;
        self.settle("notify", client, answer)
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
pub(super) fn column<'a, T: FromSql<'a>>(
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
