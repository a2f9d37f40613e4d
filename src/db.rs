//! PostgreSQL access: the connection pool, the schema-version check and one typed function
//! per statement of `sql/queries/`.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::DatabaseConfig;
use crate::outbox::ClaimedRow;
use crate::workflow::Outcome;

/// The outbox schema version this build reads and writes (sql/schema/).
pub const SCHEMA_VERSION: i32 = 2;

mod sql {
    pub const SCHEMA_VERSION: &str = include_str!("../sql/queries/schema_version.sql");
    pub const CLAIM: &str = include_str!("../sql/queries/claim.sql");
    pub const MARK_DISPATCHED: &str = include_str!("../sql/queries/mark_dispatched.sql");
    pub const MARK_FAILED: &str = include_str!("../sql/queries/mark_failed.sql");
    pub const RELEASE_CLAIM: &str = include_str!("../sql/queries/release_claim.sql");
    pub const BACKLOG: &str = include_str!("../sql/queries/backlog.sql");
    pub const STATUS_COUNTS: &str = include_str!("../sql/queries/status_counts.sql");
    pub const STATUS_FAILURES: &str = include_str!("../sql/queries/status_failures.sql");
    pub const SELECT_FOR_REPLAY: &str = include_str!("../sql/queries/select_for_replay.sql");
    pub const REPLAY_ROW: &str = include_str!("../sql/queries/replay_row.sql");
    pub const CANCEL_PENDING: &str = include_str!("../sql/queries/cancel_pending.sql");
    pub const SELECT_FOR_CANCEL: &str = include_str!("../sql/queries/select_for_cancel.sql");
    pub const DELETE_FINISHED: &str = include_str!("../sql/queries/delete_finished.sql");
    pub const RECORD_OUTCOME: &str = include_str!("../sql/queries/record_outcome.sql");
}

pub const NOTIFY_CHANNEL: &str = "trigger_relay_outbox";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid TRIGGER_RELAY_DATABASE_URL: {0}")]
    BadUrl(tokio_postgres::Error),
    #[error("cannot build the PostgreSQL pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
    #[error("cannot get a PostgreSQL connection: {0}")]
    Connection(#[from] deadpool_postgres::PoolError),
    #[error("PostgreSQL query {query} failed: {detail}")]
    Query {
        query: &'static str,
        detail: String,
        source: tokio_postgres::Error,
    },
    #[error(
        "the outbox schema is not installed in this database ({0}); run \
         `python manage.py migrate trigger_relay` or apply sql/schema/*.sql with psql"
    )]
    SchemaMissing(tokio_postgres::Error),
    #[error(
        "the database has outbox schema version {found:?} but this trigger-relay needs \
         version {expected}; {hint}"
    )]
    SchemaMismatch {
        found: Option<i32>,
        expected: i32,
        hint: &'static str,
    },
}

fn query_error(query: &'static str) -> impl FnOnce(tokio_postgres::Error) -> DbError {
    move |source| DbError::Query {
        query,
        detail: pg_detail(&source),
        source,
    }
}

/// tokio-postgres displays a server error as just "db error"; the server's own message is
/// what an operator needs.
fn pg_detail(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => error.to_string(),
    }
}

/// Parses the URL once; the pool and the LISTEN connection share the result.
pub fn pg_config(config: &DatabaseConfig) -> Result<tokio_postgres::Config, DbError> {
    let mut pg = tokio_postgres::Config::from_str(&config.database_url).map_err(DbError::BadUrl)?;
    if pg.get_application_name().is_none() {
        pg.application_name("trigger-relay");
    }
    pg.connect_timeout(config.database_timeout);
    pg.keepalives_idle(Duration::from_secs(30));
    Ok(pg)
}

/// A description of the target safe to log: host and database, never the password.
pub fn describe(pg: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    format!(
        "{}/{}",
        hosts.join(","),
        pg.get_dbname().unwrap_or("(default)")
    )
}

pub fn pool(config: &DatabaseConfig) -> Result<Pool, DbError> {
    let pg = pg_config(config)?;
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(usize::from(config.database_pool_size))
        .wait_timeout(Some(config.database_timeout))
        .create_timeout(Some(config.database_timeout))
        .recycle_timeout(Some(config.database_timeout))
        .runtime(Runtime::Tokio1)
        .build()?)
}

/// Refuses to run against a schema this build does not know (SPEC §1.1).
pub async fn check_schema(pool: &Pool) -> Result<(), DbError> {
    let client = pool.get().await?;
    let row = client
        .query_one(sql::SCHEMA_VERSION, &[])
        .await
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
                DbError::SchemaMissing(e)
            } else {
                DbError::Query {
                    query: "schema_version",
                    detail: pg_detail(&e),
                    source: e,
                }
            }
        })?;
    let found: Option<i32> = row.get(0);
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

pub async fn claim(
    pool: &Pool,
    batch_size: i64,
    replica: &str,
    lease: Duration,
) -> Result<Vec<ClaimedRow>, DbError> {
    let client = pool.get().await?;
    let rows = client
        .query(sql::CLAIM, &[&batch_size, &replica, &lease.as_secs_f64()])
        .await
        .map_err(query_error("claim"))?;
    let mut claimed: Vec<ClaimedRow> = rows
        .iter()
        .map(|r| ClaimedRow {
            id: r.get("id"),
            generation: r.get("generation"),
            event_id: r.get("event_id"),
            trigger_id: r.get("trigger_id"),
            user_pk: r.get("user_pk"),
            context: r.get("context"),
            created_at: r.get("created_at"),
            due_at: r.get("due_at"),
            attempts: r.get("attempts"),
        })
        .collect();
    // UPDATE ... RETURNING does not keep the CTE's order; start oldest first.
    claimed.sort_by_key(|r| r.id);
    Ok(claimed)
}

/// Returns the commit-to-start latency in seconds, or None if the row was no longer pending
/// (cancelled or replayed meanwhile).
pub async fn mark_dispatched(
    pool: &Pool,
    row: &ClaimedRow,
    workflow_id: &str,
    run_id: Option<&str>,
) -> Result<Option<f64>, DbError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            sql::MARK_DISPATCHED,
            &[&row.id, &row.generation, &workflow_id, &run_id],
        )
        .await
        .map_err(query_error("mark_dispatched"))?;
    Ok(rows.first().map(|r| r.get(0)))
}

pub async fn mark_failed(pool: &Pool, row: &ClaimedRow, error: &str) -> Result<bool, DbError> {
    let client = pool.get().await?;
    let n = client
        .execute(sql::MARK_FAILED, &[&row.id, &row.generation, &error])
        .await
        .map_err(query_error("mark_failed"))?;
    Ok(n == 1)
}

pub async fn release_claim(
    pool: &Pool,
    row: &ClaimedRow,
    replica: &str,
    error: &str,
) -> Result<(), DbError> {
    let client = pool.get().await?;
    client
        .execute(
            sql::RELEASE_CLAIM,
            &[&row.id, &row.generation, &replica, &error],
        )
        .await
        .map_err(query_error("release_claim"))?;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub struct Backlog {
    pub pending: i64,
    pub oldest_pending_age: Option<f64>,
    pub dispatched: i64,
    pub failed: i64,
}

pub async fn backlog(pool: &Pool) -> Result<Backlog, DbError> {
    let client = pool.get().await?;
    let r = client
        .query_one(sql::BACKLOG, &[])
        .await
        .map_err(query_error("backlog"))?;
    Ok(Backlog {
        pending: r.get("pending"),
        oldest_pending_age: r.get("oldest_pending_age"),
        dispatched: r.get("dispatched"),
        failed: r.get("failed"),
    })
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

pub async fn status(
    pool: &Pool,
    failures: i64,
) -> Result<(Vec<StateCount>, Vec<Failure>), DbError> {
    let client = pool.get().await?;
    let counts = client
        .query(sql::STATUS_COUNTS, &[])
        .await
        .map_err(query_error("status_counts"))?
        .iter()
        .map(|r| StateCount {
            state: r.get("state"),
            rows: r.get("rows"),
            oldest_age_seconds: r.get("oldest_age_seconds"),
        })
        .collect();
    let failures = client
        .query(sql::STATUS_FAILURES, &[&failures])
        .await
        .map_err(query_error("status_failures"))?
        .iter()
        .map(|r| Failure {
            id: r.get("id"),
            trigger_id: r.get("trigger_id"),
            event_id: r.get("event_id"),
            user_pk: r.get("user_pk"),
            attempts: r.get("attempts"),
            finished_at: r.get("finished_at"),
            last_error: r.get("last_error"),
        })
        .collect();
    Ok((counts, failures))
}

/// What a replay selects; `None`/empty means "any".
#[derive(Debug, Default)]
pub struct ReplaySelection {
    pub ids: Option<Vec<i64>>,
    pub id_from: Option<i64>,
    pub id_to: Option<i64>,
    pub states: Option<Vec<String>>,
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
    pub created_at: DateTime<Utc>,
    pub workflow_id: Option<String>,
}

/// Selects rows for a replay and, unless `dry_run`, moves them back to pending with the next
/// generation, all in one transaction, then wakes the relays.
pub async fn replay(
    pool: &Pool,
    selection: &ReplaySelection,
    dry_run: bool,
) -> Result<Vec<ReplayCandidate>, DbError> {
    let mut client = pool.get().await?;
    let tx = client
        .transaction()
        .await
        .map_err(query_error("replay_begin"))?;
    let rows = tx
        .query(
            sql::SELECT_FOR_REPLAY,
            &[
                &selection.ids,
                &selection.id_from,
                &selection.id_to,
                &selection.states,
                &selection.triggers,
                &selection.created_after,
                &selection.created_before,
                &selection.include_dispatched,
            ],
        )
        .await
        .map_err(query_error("select_for_replay"))?;
    let candidates: Vec<ReplayCandidate> = rows
        .iter()
        .map(|r| {
            let generation: i32 = r.get("generation");
            ReplayCandidate {
                id: r.get("id"),
                state: r.get("state"),
                generation,
                new_generation: generation + 1,
                trigger_id: r.get("trigger_id"),
                event_id: r.get("event_id"),
                user_pk: r.get("user_pk"),
                created_at: r.get("created_at"),
                workflow_id: r.get("workflow_id"),
            }
        })
        .collect();
    if dry_run || candidates.is_empty() {
        tx.rollback()
            .await
            .map_err(query_error("replay_rollback"))?;
        return Ok(candidates);
    }
    let ids: Vec<i64> = candidates.iter().map(|c| c.id).collect();
    tx.execute(sql::REPLAY_ROW, &[&ids])
        .await
        .map_err(query_error("replay_row"))?;
    // Replayed rows are updates, which the insert trigger does not announce.
    tx.execute(&format!("NOTIFY {NOTIFY_CHANNEL}"), &[])
        .await
        .map_err(query_error("replay_notify"))?;
    tx.commit().await.map_err(query_error("replay_commit"))?;
    Ok(candidates)
}

/// Records a workflow's outcome; false if the row had moved on (replayed, cancelled, or
/// already recorded by an earlier attempt).
pub async fn record_outcome(pool: &Pool, outcome: &Outcome) -> Result<bool, DbError> {
    let client = pool.get().await?;
    let n = client
        .execute(
            sql::RECORD_OUTCOME,
            &[
                &outcome.outbox_id,
                &outcome.generation,
                &outcome.state,
                &outcome.reason,
                &outcome.error,
            ],
        )
        .await
        .map_err(query_error("record_outcome"))?;
    Ok(n == 1)
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

/// The pending and dispatched rows a cancel would touch.
pub async fn select_for_cancel(
    pool: &Pool,
    selection: &CancelSelection,
) -> Result<Vec<CancelCandidate>, DbError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            sql::SELECT_FOR_CANCEL,
            &[&selection.ids, &selection.triggers, &selection.users],
        )
        .await
        .map_err(query_error("select_for_cancel"))?;
    Ok(rows
        .iter()
        .map(|r| CancelCandidate {
            id: r.get("id"),
            state: r.get("state"),
            trigger_id: r.get("trigger_id"),
            user_pk: r.get("user_pk"),
            workflow_id: r.get("workflow_id"),
        })
        .collect())
}

/// Cancels the selected pending rows; returns their ids.
pub async fn cancel_pending(
    pool: &Pool,
    selection: &CancelSelection,
    dry_run: bool,
) -> Result<Vec<i64>, DbError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            sql::CANCEL_PENDING,
            &[
                &selection.ids,
                &selection.triggers,
                &selection.users,
                &dry_run,
            ],
        )
        .await
        .map_err(query_error("cancel_pending"))?;
    Ok(rows.iter().map(|r| r.get("id")).collect())
}

/// Deletes up to `batch` rows finished longer than `keep_for` ago; returns how many.
pub async fn delete_finished(pool: &Pool, keep_for: Duration, batch: i64) -> Result<u64, DbError> {
    let client = pool.get().await?;
    client
        .execute(sql::DELETE_FINISHED, &[&keep_for.as_secs_f64(), &batch])
        .await
        .map_err(query_error("delete_finished"))
}
