//! The outbox row and its state machine (SPEC §1.2, §1.3).
//!
//! ```text
//!            claim (lease)            start accepted / already started
//!  pending ─────────────────► pending ─────────────────────────────────► dispatched
//!     ▲        (claimed)        │  │                                       │
//!     │                         │  └─ can never start ─► failed             ├─► done
//!     │      release / lease    │                                           ├─► skipped (reason)
//!     └─────── expiry ──────────┘                                           ├─► failed (error)
//!     ▲                                                                     └─► cancelled
//!     └──── replay (generation + 1, new workflow id) ◄── any state but pending
//! ```
//!
//! The relay owns `pending → dispatched` and `pending → failed`; the trigger workflow owns the
//! transitions out of `dispatched`; an operator's `replay` moves finished rows back to
//! `pending`. Each SQL statement in `sql/queries/` that changes `state` guards on the state it
//! leaves, so a transition can never be applied twice or out of order.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The states of an outbox row, as stored in `trigger_relay_outbox.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    Dispatched,
    Done,
    Skipped,
    Failed,
    Cancelled,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Dispatched,
        State::Done,
        State::Skipped,
        State::Failed,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Dispatched => "dispatched",
            State::Done => "done",
            State::Skipped => "skipped",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = State::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown state {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// A row the relay has claimed and must turn into a workflow start.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    pub id: i64,
    pub generation: i32,
    pub event_id: i64,
    pub trigger_id: i64,
    pub user_pk: String,
    pub context: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub attempts: i32,
}

/// The single argument of `trigger_workflow` (docs/contract.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowInput {
    pub outbox_id: i64,
    pub generation: i32,
    pub event_id: i64,
    pub trigger_id: i64,
    pub user_pk: String,
    pub context: serde_json::Map<String, serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
}

/// Why a row can never become a workflow start (SPEC §4.5).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BadPayload {
    #[error("context is not a JSON object but {0}")]
    ContextNotObject(&'static str),
    #[error("user_pk is empty")]
    EmptyUserPk,
    #[error("event_id {0} is not a valid primary key")]
    BadEventId(i64),
    #[error("trigger_id {0} is not a valid primary key")]
    BadTriggerId(i64),
    #[error("due_at {due_at} is before created_at {created_at}")]
    DueBeforeCreated {
        due_at: DateTime<Utc>,
        created_at: DateTime<Utc>,
    },
    #[error("workflow input is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

impl ClaimedRow {
    /// The workflow id of this row's current generation: stable across retries and replicas,
    /// new for each replay (SPEC §4.3, §4.6).
    pub fn workflow_id(&self, prefix: &str) -> String {
        workflow_id(prefix, self.id, self.generation)
    }

    /// Checks what the relay can check and builds the workflow input.
    pub fn workflow_input(&self, max_input_bytes: usize) -> Result<WorkflowInput, BadPayload> {
        let context = match &self.context {
            serde_json::Value::Object(map) => map.clone(),
            other => return Err(BadPayload::ContextNotObject(json_type(other))),
        };
        if self.user_pk.is_empty() {
            return Err(BadPayload::EmptyUserPk);
        }
        if self.event_id <= 0 {
            return Err(BadPayload::BadEventId(self.event_id));
        }
        if self.trigger_id <= 0 {
            return Err(BadPayload::BadTriggerId(self.trigger_id));
        }
        if self.due_at < self.created_at {
            return Err(BadPayload::DueBeforeCreated {
                due_at: self.due_at,
                created_at: self.created_at,
            });
        }
        let input = WorkflowInput {
            outbox_id: self.id,
            generation: self.generation,
            event_id: self.event_id,
            trigger_id: self.trigger_id,
            user_pk: self.user_pk.clone(),
            context,
            created_at: self.created_at,
            due_at: self.due_at,
        };
        // Serializing a map of JSON values cannot fail; measure what Temporal will receive.
        let size = serde_json::to_vec(&input)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > max_input_bytes {
            return Err(BadPayload::TooLarge {
                size,
                limit: max_input_bytes,
            });
        }
        Ok(input)
    }
}

pub fn workflow_id(prefix: &str, outbox_id: i64, generation: i32) -> String {
    format!("{prefix}-{outbox_id}-g{generation}")
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ClaimedRow {
        let now = Utc::now();
        ClaimedRow {
            id: 42,
            generation: 0,
            event_id: 3,
            trigger_id: 2,
            user_pk: "7".into(),
            context: serde_json::json!({"task_id": 5}),
            created_at: now,
            due_at: now,
            attempts: 1,
        }
    }

    #[test]
    fn workflow_id_changes_with_generation_only() {
        let mut r = row();
        assert_eq!(r.workflow_id("trigger-outbox"), "trigger-outbox-42-g0");
        r.generation = 1;
        assert_eq!(r.workflow_id("trigger-outbox"), "trigger-outbox-42-g1");
    }

    #[test]
    fn valid_row_becomes_input() -> Result<(), BadPayload> {
        let input = row().workflow_input(1 << 20)?;
        assert_eq!(input.outbox_id, 42);
        assert_eq!(input.context["task_id"], 5);
        Ok(())
    }

    #[test]
    fn poison_rows_are_named() {
        let mut r = row();
        r.context = serde_json::json!([1, 2]);
        assert_eq!(
            r.workflow_input(1 << 20),
            Err(BadPayload::ContextNotObject("an array"))
        );
        let mut r = row();
        r.user_pk = String::new();
        assert_eq!(r.workflow_input(1 << 20), Err(BadPayload::EmptyUserPk));
        let r = row();
        assert!(matches!(
            r.workflow_input(10),
            Err(BadPayload::TooLarge { limit: 10, .. })
        ));
    }

    #[test]
    fn states_round_trip() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>(), Ok(state));
        }
        assert!("running".parse::<State>().is_err());
    }
}
