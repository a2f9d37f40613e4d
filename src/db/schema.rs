//! What the daemon and every command check before anything else: the outbox schema's
//! version (guarantees §1.1) and the site identity of the database (docs/contract.md, "Site
//! identity").

use super::pool::column;
use super::{Db, DbError, SCHEMA_VERSION, pg_detail};

const SCHEMA_VERSION_SQL: &str = include_str!("../../sql/queries/schema_version.sql");
const SITE_ID: &str = include_str!("../../sql/queries/site_id.sql");

impl Db {
    /// Refuses to run against a schema this build does not know (guarantees §1.1).
    pub async fn check_schema(&self) -> Result<(), DbError> {
        let rows = self
            .rows("schema_version", SCHEMA_VERSION_SQL, &[])
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
        let rows = self.rows("site_id", SITE_ID, &[]).await?;
        match rows.as_slice() {
            [row] => column(row, "site_id", "id"),
            _ => Err(DbError::SiteMissing { rows: rows.len() }),
        }
    }
}
