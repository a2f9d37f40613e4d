//! The outbox row and its state machine (guarantees §1.2, §1.3).
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

/// A word that no member of a vocabulary spells (a `--state` flag, a row's state, an
/// activity's outcome): the error of each vocabulary's `FromStr`, naming the word and the
/// words it could have been.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {word:?}; expected one of {expected}")]
pub struct UnknownWord {
    /// What the word was meant to name: `state`, `outcome` or `skip reason`.
    pub kind: &'static str,
    /// The word as it arrived.
    pub word: String,
    /// The vocabulary's words, comma-separated.
    pub expected: String,
}

/// One vocabulary of words that cross a boundary (the outbox table, the activities'
/// results, the metrics' labels): an enum with `ALL`, `as_str`, `Display`, `FromStr` and
/// serde, all spelled from the one word given per member, so that they cannot disagree.
/// The words are the schema's and docs/contract.md's; the tests below check them against
/// both, as the add-on's tests/test_vocabulary.py checks its own (trigger_relay/states.py).
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($kind:literal) {
            $( $(#[$member_meta:meta])* $member:ident = $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$member_meta])* #[serde(rename = $word)] $member, )+
        }

        impl $name {
            /// Every member, in the order docs/contract.md lists them.
            pub const ALL: &[Self] = &[$(Self::$member),+];

            /// The member's word, as stored, sent and documented.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$member => $word,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownWord;

            fn from_str(word: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|member| member.as_str() == word)
                    .ok_or_else(|| UnknownWord {
                        kind: $kind,
                        word: word.to_owned(),
                        expected: Self::ALL
                            .iter()
                            .map(|member| member.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }
    };
}

vocabulary! {
    /// The states of an outbox row, as stored in `trigger_relay_outbox.state` (the CHECK
    /// constraint `trigger_relay_outbox_state_valid`, sql/schema/0001_outbox.sql) and carried
    /// in the workflow's outcome (same spelling in JSON).
    pub enum State ("state") {
        Pending = "pending",
        Dispatched = "dispatched",
        Done = "done",
        Skipped = "skipped",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

vocabulary! {
    /// The outcome of a `perform_firing` that returned ([`FiringResult::outcome`];
    /// docs/contract.md, "Activities"): each is also the [`State`] of the same word. A failure
    /// is not an outcome: the activity raises.
    pub enum FiringOutcome ("outcome") {
        Done = "done",
        Skipped = "skipped",
    }
}

vocabulary! {
    /// Why a firing was skipped (docs/contract.md, "Skip reasons"): the `skip_reason` of a
    /// `skipped` row and the `reason` of a skipped [`FiringResult`].
    pub enum SkipReason ("skip reason") {
        TriggerDeleted = "trigger_deleted",
        TriggerDisabled = "trigger_disabled",
        NoActions = "no_actions",
        EventDeleted = "event_deleted",
        UserFilteredOut = "user_filtered_out",
        ConditionFalse = "condition_false",
        /// Cancelled: the row, or the site's code raised `Activity.Cancel`.
        Cancelled = "cancelled",
        /// The site's `Event.handle` or `Trigger.on_event` override returned without reaching
        /// dj-triggers' own, and so without performing anything.
        NotHandled = "not_handled",
        /// A replay started a newer generation, whose workflow does the work.
        Superseded = "superseded",
        /// The row's `firing_uuid` is not the workflow's: the row id belongs to another firing.
        FiringMismatch = "firing_mismatch",
        /// The input names another event, trigger or user than its row (guarantees §3.7).
        InputMismatch = "input_mismatch",
        /// The calling workflow run is not the row's own: nothing is performed and nothing is
        /// written on the row, so no row holds this reason (sql/queries/record_outcome.sql).
        WorkflowMismatch = "workflow_mismatch",
        /// A skip reported without a reason: the word the workflow records for it
        /// (src/workflow.rs), rather than none.
        Unspecified = "unspecified",
    }
}

/// Deepest nesting of arrays and objects a context may have. The Django add-on refuses
/// deeper contexts at `fire()` (trigger_relay/context.py has the same number); a row
/// written by other means is failed with this reason rather than handed to decoders with
/// their own, lower limits (serde_json stops at 128).
pub const MAX_CONTEXT_DEPTH: usize = 64;

/// A row the relay has claimed and must turn into a workflow start.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    pub id: i64,
    pub generation: i32,
    /// NULL for rows written before schema version 3 (they keep their old workflow id).
    pub firing_uuid: Option<String>,
    pub event_id: i64,
    pub trigger_id: i64,
    pub user_pk: String,
    /// The `jsonb` context as PostgreSQL prints it: carried verbatim, so integers beyond
    /// 64 bits and numbers beyond f64 arrive exactly as stored.
    pub context: String,
    pub created_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub attempts: i32,
    /// The id of the workflow this claim starts, written on the row by the claim itself
    /// (sql/queries/claim.sql): `{prefix}-{id}-g{generation}-{firing_uuid}`, unique to this
    /// firing and generation, stable across retries and replicas, new for each replay.
    pub workflow_id: String,
}

/// A claimed row with a value the daemon cannot decode; it is failed alone (guarantees §4.5).
#[derive(Debug, Clone, PartialEq)]
pub struct UndecodableRow {
    pub id: i64,
    pub generation: i32,
    pub column: &'static str,
    pub detail: String,
}

/// A claimed row the relay fails alone, before building its workflow input (README,
/// "Running it in production", poison rows).
#[derive(Debug, Clone, PartialEq)]
pub enum PoisonRow {
    /// A column the daemon cannot decode.
    Undecodable(UndecodableRow),
    /// A context over the per-row limit: PostgreSQL measured it in the claim
    /// (sql/queries/claim.sql) and the claim left it out, so it never reaches the daemon.
    Oversize {
        id: i64,
        generation: i32,
        problem: BadPayload,
    },
}

impl PoisonRow {
    pub fn id(&self) -> i64 {
        match self {
            PoisonRow::Undecodable(bad) => bad.id,
            PoisonRow::Oversize { id, .. } => *id,
        }
    }

    pub fn generation(&self) -> i32 {
        match self {
            PoisonRow::Undecodable(bad) => bad.generation,
            PoisonRow::Oversize { generation, .. } => *generation,
        }
    }

    /// The row's `last_error`.
    pub fn reason(&self) -> String {
        match self {
            PoisonRow::Undecodable(bad) => bad.reason(),
            PoisonRow::Oversize { problem, .. } => format!("bad payload: {problem}"),
        }
    }
}

impl UndecodableRow {
    pub fn reason(&self) -> String {
        let hint = match self.column {
            "due_at" | "created_at" => " (infinite or out-of-range timestamps cannot be scheduled)",
            _ => "",
        };
        format!(
            "bad payload: column {} cannot be decoded: {}{hint}",
            self.column, self.detail
        )
    }
}

/// The single argument of `trigger_workflow` (docs/contract.md).
///
/// The context travels as its JSON *text* (`context_json`): the Rust SDK decodes every
/// payload through `serde_json::Value`, which turns an integer beyond 64 bits into an f64
/// and refuses a number beyond f64 (`1e400`) outright, so a context carried as an object
/// would be rounded, or would fail the workflow task forever. A string passes untouched,
/// and the Python activity decodes it with exact integers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowInput {
    pub outbox_id: i64,
    pub generation: i32,
    /// Absent in inputs of rows from before schema version 3.
    #[serde(default)]
    pub firing_uuid: Option<String>,
    pub event_id: i64,
    pub trigger_id: i64,
    pub user_pk: String,
    /// The context, a JSON object, as PostgreSQL prints the `jsonb` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_json: Option<String>,
    /// Inputs recorded before `context_json` carried the context as an object; kept so
    /// that their histories still decode and replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Box<serde_json::value::RawValue>>,
    pub created_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    /// Set by the workflow on the copy it hands to `perform_firing`, never by the relay: the
    /// Python activity may record a `done` or `skipped` outcome on the row itself, in the
    /// firing's own transaction, and says so in [`FiringResult::recorded`]. Absent from the
    /// workflow's input and from older histories.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record_outcome: bool,
    /// The site identity of the outbox's database (docs/contract.md, "Site identity"): the
    /// activities of both workers refuse the task of another site that shares the
    /// namespace and task queues. Absent from inputs of rows from before schema version 7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// What the Python activity reports back (django-trigger-relay, trigger_relay/activities.py).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiringResult {
    /// A [`FiringOutcome`] word; anything else is recorded as a failure of the worker. Kept as
    /// the text the worker sent: a word this build does not know must fail the row, not the
    /// workflow task's decoding, and recorded histories replay with the text they carry.
    pub outcome: String,
    /// For `skipped`: a [`SkipReason`] word, passed on as the worker sent it (a newer worker
    /// may know reasons this build does not); the workflow records
    /// [`SkipReason::Unspecified`] for a skip without one.
    pub reason: Option<String>,
    /// Action ids performed by this run.
    #[serde(default)]
    pub performed: Vec<i64>,
    /// Action ids the ledger shows as performed before (retries, replays).
    #[serde(default)]
    pub already_performed: Vec<i64>,
    /// The activity recorded the outcome on the outbox row in the firing's transaction, as
    /// `record_outcome` would have: the workflow skips that activity. Absent (false) from
    /// workers before this field and from older histories.
    #[serde(default)]
    pub recorded: bool,
}

/// The final state of an outbox row, recorded by `record_outcome` and returned as the
/// workflow's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub outbox_id: i64,
    pub generation: i32,
    #[serde(default)]
    pub firing_uuid: Option<String>,
    /// done, skipped, failed or cancelled.
    pub state: State,
    /// For `skipped`: the [`SkipReason`] word, as the worker reported it (text, as the
    /// recorded histories carry it).
    pub reason: Option<String>,
    pub error: Option<String>,
    #[serde(default)]
    pub performed: Vec<i64>,
    /// The input's site (see [`WorkflowInput::site`]), checked by `record_outcome`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// Why a row can never become a workflow start (guarantees §4.5).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum BadPayload {
    #[error("column context is not a JSON object")]
    ContextNotObject,
    #[error("column context nests deeper than {limit} levels")]
    ContextTooDeep { limit: usize },
    #[error("column context is not valid JSON: {0}")]
    ContextInvalid(String),
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
    #[error(
        "workflow input is {size} bytes, over the limit of {limit} bytes \
         (TRIGGER_RELAY_MAX_INPUT_BYTES)"
    )]
    TooLarge { size: usize, limit: usize },
    #[error(
        "column context is {size} bytes as text, over the limit of {limit} bytes \
         (TRIGGER_RELAY_MAX_INPUT_BYTES); the relay failed the row without reading it"
    )]
    ContextTooLarge { size: i64, limit: usize },
}

impl ClaimedRow {
    /// Checks what the relay can check and builds the workflow input for `site`.
    pub fn workflow_input(
        &self,
        max_input_bytes: usize,
        site: &str,
    ) -> Result<WorkflowInput, BadPayload> {
        check_context(&self.context)?;
        // Valid JSON is checked here, where a bad row can still fail alone.
        serde_json::from_str::<serde::de::IgnoredAny>(&self.context)
            .map_err(|e| BadPayload::ContextInvalid(e.to_string()))?;
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
            firing_uuid: self.firing_uuid.clone(),
            event_id: self.event_id,
            trigger_id: self.trigger_id,
            user_pk: self.user_pk.clone(),
            context_json: Some(self.context.clone()),
            context: None,
            created_at: self.created_at,
            due_at: self.due_at,
            record_outcome: false,
            site: Some(site.to_owned()),
        };
        // Serializing plain fields cannot fail; measure what Temporal receives, counted
        // as it is written rather than in one more copy of the context.
        let mut counter = ByteCounter(0);
        let size = serde_json::to_writer(&mut counter, &input)
            .map(|()| counter.0)
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

/// A writer that keeps only the number of bytes written to it.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An object, nested at most [`MAX_CONTEXT_DEPTH`] deep: counted on the text, without
/// recursion, before any parser sees it.
fn check_context(json: &str) -> Result<(), BadPayload> {
    if !json.trim_start().starts_with('{') {
        return Err(BadPayload::ContextNotObject);
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in json.bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_CONTEXT_DEPTH {
                    return Err(BadPayload::ContextTooDeep {
                        limit: MAX_CONTEXT_DEPTH,
                    });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = "5d0f6c2a-0000-4000-8000-000000000001";

    fn row() -> ClaimedRow {
        let now = Utc::now();
        ClaimedRow {
            id: 42,
            generation: 0,
            firing_uuid: Some("0b9c3c1e-6f7a-4c59-9d43-2f1f0a4b7e10".into()),
            event_id: 3,
            trigger_id: 2,
            user_pk: "7".into(),
            context: r#"{"task_id": 5}"#.into(),
            created_at: now,
            due_at: now,
            attempts: 1,
            workflow_id: "trigger-outbox-42-g0-0b9c3c1e-6f7a-4c59-9d43-2f1f0a4b7e10".into(),
        }
    }

    #[test]
    fn valid_row_becomes_input() -> Result<(), BadPayload> {
        let input = row().workflow_input(1 << 20, SITE)?;
        assert_eq!(input.outbox_id, 42);
        assert_eq!(input.context_json.as_deref(), Some(r#"{"task_id": 5}"#));
        assert_eq!(input.site.as_deref(), Some(SITE));
        Ok(())
    }

    #[test]
    fn numbers_travel_exactly() -> Result<(), Box<dyn std::error::Error>> {
        let mut r = row();
        let huge = format!("1{}", "0".repeat(400));
        r.context = format!(r#"{{"n": 1180591620717411303424, "big": {huge}}}"#);
        let json = serde_json::to_vec(&r.workflow_input(1 << 20, SITE)?)?;
        // The SDK's own path: bytes -> serde_json::Value -> the workflow's input type.
        let value: serde_json::Value = serde_json::from_slice(&json)?;
        let back: WorkflowInput = serde_json::from_value(value)?;
        assert_eq!(back.context_json.as_deref(), Some(r.context.as_str()));
        let again = serde_json::to_string(&back)?;
        assert!(again.contains("1180591620717411303424") && again.contains(&huge));
        Ok(())
    }

    #[test]
    fn inputs_recorded_with_a_context_object_still_decode() -> Result<(), serde_json::Error> {
        let old = r#"{"outbox_id": 1, "generation": 0, "event_id": 1, "trigger_id": 1,
            "user_pk": "7", "context": {"task_id": 5},
            "created_at": "2026-11-27T10:00:00Z", "due_at": "2026-11-27T10:00:00Z"}"#;
        let value: serde_json::Value = serde_json::from_str(old)?;
        let input: WorkflowInput = serde_json::from_value(value)?;
        assert_eq!(input.firing_uuid, None);
        assert_eq!(input.site, None);
        assert_eq!(input.context_json, None);
        assert!(input.context.is_some_and(|c| c.get().contains("task_id")));
        Ok(())
    }

    #[test]
    fn poison_rows_are_named() {
        let mut r = row();
        r.context = "[1, 2]".into();
        assert_eq!(
            r.workflow_input(1 << 20, SITE).err(),
            Some(BadPayload::ContextNotObject)
        );
        let mut r = row();
        r.context = format!("{{\"a\": {}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(
            r.workflow_input(1 << 20, SITE).err(),
            Some(BadPayload::ContextTooDeep { limit: 64 })
        );
        // Brackets inside strings do not count.
        let mut r = row();
        r.context = format!("{{\"a\": \"{}\\\"\"}}", "[".repeat(200));
        assert!(r.workflow_input(1 << 20, SITE).is_ok());
        let mut r = row();
        r.user_pk = String::new();
        assert_eq!(
            r.workflow_input(1 << 20, SITE).err(),
            Some(BadPayload::EmptyUserPk)
        );
        let r = row();
        assert!(matches!(
            r.workflow_input(10, SITE),
            Err(BadPayload::TooLarge { limit: 10, .. })
        ));
    }

    #[test]
    fn the_size_limit_is_the_serialized_input_exactly() -> Result<(), Box<dyn std::error::Error>> {
        let mut r = row();
        // Quotes and backslashes are escaped once more inside `context_json`.
        r.context = format!(r#"{{"a": "{}"}}"#, "\\\"".repeat(1000));
        let size = serde_json::to_vec(&r.workflow_input(1 << 20, SITE)?)?.len();
        assert!(size > 2 * r.context.len(), "{size}");
        assert!(r.workflow_input(size, SITE).is_ok());
        assert_eq!(
            r.workflow_input(size - 1, SITE).err(),
            Some(BadPayload::TooLarge {
                size,
                limit: size - 1
            })
        );
        Ok(())
    }

    #[test]
    fn an_oversize_context_is_named_with_its_size_and_the_limit() {
        let poison = PoisonRow::Oversize {
            id: 7,
            generation: 1,
            problem: BadPayload::ContextTooLarge {
                size: 3_000_012,
                limit: 2_097_152,
            },
        };
        assert_eq!((poison.id(), poison.generation()), (7, 1));
        assert_eq!(
            poison.reason(),
            "bad payload: column context is 3000012 bytes as text, over the limit of 2097152 \
             bytes (TRIGGER_RELAY_MAX_INPUT_BYTES); the relay failed the row without reading it"
        );
    }

    #[test]
    fn states_round_trip() -> Result<(), serde_json::Error> {
        for &state in State::ALL {
            assert_eq!(state.as_str().parse::<State>(), Ok(state));
            assert_eq!(serde_json::to_string(&state)?, format!("\"{state}\""));
        }
        assert!("running".parse::<State>().is_err());
        Ok(())
    }

    /// The vocabularies' words against what they must equal: the schema's CHECK constraint
    /// and docs/contract.md, read as the add-on's tests/test_vocabulary.py reads them, so that
    /// the daemon, the schema, the documents and the add-on (trigger_relay/states.py) cannot
    /// drift apart.
    mod vocabulary {
        use std::collections::BTreeSet;

        use super::super::{FiringOutcome, SkipReason, State, UnknownWord};

        const SCHEMA: &str = include_str!("../sql/schema/0001_outbox.sql");
        const CONTRACT: &str = include_str!("../docs/contract.md");
        const STATE_CONSTRAINT: &str = "trigger_relay_outbox_state_valid";

        fn words_of<T: Copy>(all: &[T], as_str: fn(T) -> &'static str) -> Vec<&'static str> {
            all.iter().map(|&member| as_str(member)).collect()
        }

        /// The runs of `[a-z_]` in `text`.
        fn runs(text: &str) -> Vec<&str> {
            text.split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .filter(|word| !word.is_empty())
                .collect()
        }

        /// The quoted words of the CHECK of `CONSTRAINT <name>` in `sql`: the parenthesis
        /// after `CHECK` to its matching one, so the next constraint is not read as this one.
        fn constraint_words<'a>(sql: &'a str, name: &str) -> Vec<&'a str> {
            let head = format!("CONSTRAINT {name}");
            assert_eq!(sql.matches(&head).count(), 1, "{head} once in the schema");
            let (_, rest) = sql.split_once(&head).expect("the constraint");
            let rest = rest
                .trim_start()
                .strip_prefix("CHECK")
                .expect("a CHECK constraint");
            let open = rest.find('(').expect("CHECK (");
            let mut depth = 0usize;
            let mut close = None;
            for (at, c) in rest.char_indices().skip(open) {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            close = Some(at);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let check = &rest[open..=close.expect("the CHECK's closing parenthesis")];
            check.split('\'').skip(1).step_by(2).collect()
        }

        /// ``states `pending → dispatched → done | skipped | failed | cancelled` ``
        /// ("Outbox table"): test_vocabulary.py's `states\s+`([^`]+)``.
        fn documented_states() -> Vec<&'static str> {
            let spelled: Vec<&str> = CONTRACT
                .match_indices("states")
                .filter_map(|(at, found)| {
                    let after = &CONTRACT[at + found.len()..];
                    let body = after.trim_start();
                    if body.len() == after.len() {
                        return None;
                    }
                    let body = body.strip_prefix('`')?;
                    let end = body.find('`')?;
                    (end > 0).then(|| &body[..end])
                })
                .collect();
            assert_eq!(spelled.len(), 1, "one list of states: {spelled:?}");
            runs(spelled[0])
        }

        /// `{"outcome": "done"/"skipped", ...}`, perform_firing's result ("Activities"):
        /// test_vocabulary.py's `"outcome": ((?:"[a-z_]+"/?)+)`.
        fn documented_outcomes() -> Vec<&'static str> {
            let lists: Vec<Vec<&str>> = CONTRACT
                .match_indices("\"outcome\": ")
                .map(|(at, found)| {
                    let mut rest = &CONTRACT[at + found.len()..];
                    let mut words = Vec::new();
                    while let Some(quoted) = rest.strip_prefix('"') {
                        let len = quoted
                            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                            .unwrap_or(quoted.len());
                        let Some(after) = quoted[len..].strip_prefix('"') else {
                            break;
                        };
                        if len == 0 {
                            break;
                        }
                        words.push(&quoted[..len]);
                        rest = after.strip_prefix('/').unwrap_or(after);
                    }
                    words
                })
                .filter(|words| !words.is_empty())
                .collect();
            assert_eq!(lists.len(), 1, "one list of outcomes: {lists:?}");
            lists.into_iter().next().unwrap_or_default()
        }

        /// The paragraph "Skip reasons: a, b (what b means), c ..." under "Activities", without
        /// what stands in parentheses (nested ones included).
        fn documented_skip_reasons() -> Vec<String> {
            let start = "Skip reasons:";
            let paragraphs: Vec<&str> = CONTRACT
                .split("\n\n")
                .filter(|block| block.starts_with(start))
                .collect();
            assert_eq!(paragraphs.len(), 1, "one paragraph {start:?}");
            let mut listed = String::new();
            let mut depth = 0usize;
            for c in paragraphs[0][start.len()..].chars() {
                match c {
                    '(' => depth += 1,
                    ')' => depth = depth.saturating_sub(1),
                    _ if depth == 0 => listed.push(c),
                    _ => {}
                }
            }
            listed
                .split(',')
                .map(|word| word.trim_matches([' ', '\n', '.']).to_owned())
                .collect()
        }

        #[test]
        fn the_states_are_the_check_constraint_s() {
            assert_eq!(
                constraint_words(SCHEMA, STATE_CONSTRAINT),
                words_of(State::ALL, State::as_str)
            );
        }

        /// The constraint the test above reads is the one in force: no later schema file
        /// redefines it (released files are never edited; a new one would, CONTRIBUTING.md).
        #[test]
        fn no_later_schema_file_redefines_the_state_constraint() -> std::io::Result<()> {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/schema");
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path
                    .file_name()
                    .is_some_and(|name| name == "0001_outbox.sql")
                {
                    continue;
                }
                let text = std::fs::read_to_string(&path)?;
                assert!(
                    !text.contains(STATE_CONSTRAINT),
                    "{} redefines {STATE_CONSTRAINT}: read the states from it",
                    path.display()
                );
            }
            Ok(())
        }

        #[test]
        fn the_states_are_the_documented_ones() {
            assert_eq!(documented_states(), words_of(State::ALL, State::as_str));
        }

        #[test]
        fn the_outcomes_are_the_documented_ones_and_states() {
            assert_eq!(
                documented_outcomes(),
                words_of(FiringOutcome::ALL, FiringOutcome::as_str)
            );
            for outcome in FiringOutcome::ALL {
                assert!(outcome.as_str().parse::<State>().is_ok(), "{outcome}");
            }
        }

        #[test]
        fn the_skip_reasons_are_the_documented_ones() {
            let documented = documented_skip_reasons();
            let unique: BTreeSet<&str> = documented.iter().map(String::as_str).collect();
            assert_eq!(unique.len(), documented.len(), "{documented:?}");
            let ours: BTreeSet<&str> = words_of(SkipReason::ALL, SkipReason::as_str)
                .into_iter()
                .collect();
            assert_eq!(ours.len(), SkipReason::ALL.len());
            assert_eq!(unique, ours);
        }

        #[test]
        fn members_are_their_words() -> Result<(), serde_json::Error> {
            fn check<T>(all: &[T], as_str: fn(T) -> &'static str) -> Result<(), serde_json::Error>
            where
                T: Copy
                    + PartialEq
                    + std::fmt::Debug
                    + std::fmt::Display
                    + std::str::FromStr<Err = UnknownWord>
                    + serde::Serialize
                    + serde::de::DeserializeOwned,
            {
                for &member in all {
                    let word = as_str(member);
                    assert_eq!(member.to_string(), word);
                    assert_eq!(word.parse::<T>(), Ok(member));
                    assert_eq!(serde_json::to_string(&member)?, format!("\"{word}\""));
                    assert_eq!(serde_json::from_str::<T>(&format!("\"{word}\""))?, member);
                }
                Ok(())
            }
            check(State::ALL, State::as_str)?;
            check(FiringOutcome::ALL, FiringOutcome::as_str)?;
            check(SkipReason::ALL, SkipReason::as_str)
        }

        #[test]
        fn an_unknown_word_is_named() {
            assert_eq!(
                "running".parse::<State>().map_err(|e| e.to_string()),
                Err(
                    "unknown state \"running\"; expected one of pending, dispatched, done, \
                     skipped, failed, cancelled"
                        .to_owned()
                )
            );
            let unknown = "failed".parse::<FiringOutcome>().err();
            assert_eq!(
                unknown.as_ref().map(|e| (e.kind, e.word.as_str())),
                Some(("outcome", "failed"))
            );
            let unknown = "Not_Handled".parse::<SkipReason>().err();
            assert_eq!(
                unknown
                    .map(|e| e.to_string())
                    .as_deref()
                    .map(|m| m.starts_with(
                        "unknown skip reason \"Not_Handled\"; expected one of trigger_deleted, "
                    )),
                Some(true)
            );
        }
    }
}
