//! The operator commands' statements (src/cli/): `status`, `replay` and `cancel`.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;

use super::pool::column;
use super::{Db, DbError};
use crate::outbox::State;

const STATUS_COUNTS: &str = include_str!("../../sql/queries/status_counts.sql");
const STATUS_FAILURES: &str = include_str!("../../sql/queries/status_failures.sql");
const SELECT_FOR_REPLAY: &str = include_str!("../../sql/queries/select_for_replay.sql");
const REPLAY_ROW: &str = include_str!("../../sql/queries/replay_row.sql");
const SELECT_FOR_CANCEL: &str = include_str!("../../sql/queries/select_for_cancel.sql");
const CANCEL_PENDING: &str = include_str!("../../sql/queries/cancel_pending.sql");

/// Rows replayed per transaction: a replay of a whole trigger's history must not hold a
/// million row locks in one transaction next to the site's traffic.
const REPLAY_BATCH: usize = 500;

impl Db {
    pub async fn status(&self, failures: i64) -> Result<(Vec<StateCount>, Vec<Failure>), DbError> {
        const Q: &str = "status";
        let counts = self
            .rows("status_counts", STATUS_COUNTS, &[])
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
                STATUS_FAILURES,
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
                SELECT_FOR_REPLAY,
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
                    REPLAY_ROW,
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

    /// The pending and dispatched rows a cancel would touch.
    pub async fn select_for_cancel(
        &self,
        selection: &CancelSelection,
    ) -> Result<Vec<CancelCandidate>, DbError> {
        const Q: &str = "select_for_cancel";
        self.rows(
            Q,
            SELECT_FOR_CANCEL,
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
            CANCEL_PENDING,
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
