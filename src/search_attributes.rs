//! Firings findable in Temporal: each `trigger_workflow` carries the outbox id, the trigger's
//! id and name, the event id and the user pk as a memo, always, and as search attributes
//! where the namespace has them registered, so that the UI and
//! `temporal workflow list --query 'TriggerId = 7 AND UserPk = "42"'` find a trigger's or a
//! user's firings.
//!
//! Search attributes are never encrypted, even with payload encryption on (src/codec/), and
//! the user pk is personal data: TRIGGER_RELAY_VISIBILITY_PERSONAL_DATA=false leaves the user
//! pk and the trigger's name out of the memo, the search attributes and the summary
//! ([`Firing::personal`]), so the UI shows ids only.
//!
//! Temporal refuses a start that names a search attribute the namespace does not have, so
//! the relay asks the namespace which of ours it has (the operator service's
//! `ListSearchAttributes`) at start and every [`RECHECK`] afterwards, logs one line naming
//! the missing ones with the command that adds them, and sends only the present ones.

use std::time::Duration;

use temporalio_client::grpc::OperatorService;
use temporalio_client::tonic;
use temporalio_client::{Client, NamespacedClient};
use temporalio_common::MemoValues;
use temporalio_common::protos::temporal::api::enums::v1::IndexedValueType;
use temporalio_common::protos::temporal::api::operatorservice::v1::ListSearchAttributesRequest;
use temporalio_common::search_attributes::{SearchAttributeKey, SearchAttributes};
use tokio::sync::Mutex;
use tokio::time::Instant;

pub const OUTBOX_ID: SearchAttributeKey<i64> = SearchAttributeKey::int("TriggerRelayOutboxId");
pub const TRIGGER_ID: SearchAttributeKey<i64> = SearchAttributeKey::int("TriggerId");
pub const TRIGGER_NAME: SearchAttributeKey<String> = SearchAttributeKey::keyword("TriggerName");
pub const EVENT_ID: SearchAttributeKey<i64> = SearchAttributeKey::int("EventId");
pub const USER_PK: SearchAttributeKey<String> = SearchAttributeKey::keyword("UserPk");

/// Every search attribute the relay sets, in the order of [`Present`].
pub const ATTRIBUTES: [(&str, IndexedValueType); 5] = [
    ("TriggerRelayOutboxId", IndexedValueType::Int),
    ("TriggerId", IndexedValueType::Int),
    ("TriggerName", IndexedValueType::Keyword),
    ("EventId", IndexedValueType::Int),
    ("UserPk", IndexedValueType::Keyword),
];

/// The memo's keys (the workflow input's field names).
pub const MEMO_KEYS: [&str; 5] = [
    "outbox_id",
    "trigger_id",
    "trigger_name",
    "event_id",
    "user_pk",
];

/// A Keyword value longer than this (characters, or bytes for [`MAX_KEYWORD_BYTES`]) is left
/// out of the search attributes (the memo keeps it): SQL visibility stores keywords in
/// columns of 255 characters, and Temporal's per-value limit is 2 KB by default. dj-triggers'
/// names (64 characters) always fit.
pub const MAX_KEYWORD_CHARS: usize = 255;
pub const MAX_KEYWORD_BYTES: usize = 1024;

fn indexable(value: &str) -> bool {
    value.len() <= MAX_KEYWORD_BYTES && value.chars().count() <= MAX_KEYWORD_CHARS
}

/// A memo string longer than this is cut (at a character boundary, marked with `…`): the
/// SDK warns about memos over 2 KB; the exact value is in the workflow's input.
pub const MAX_MEMO_STRING_BYTES: usize = 512;

/// How long a successful check holds before it is made again (attributes added while the
/// daemon runs are picked up within this).
pub const RECHECK: Duration = Duration::from_secs(300);

/// After a failed check, the next attempt waits this long (meanwhile: memo only).
pub const RECHECK_AFTER_ERROR: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SearchAttributeError {
    #[error("cannot list the search attributes of namespace {namespace}: {code:?}: {message}")]
    List {
        namespace: String,
        code: tonic::Code,
        message: String,
    },
    #[error("cannot encode search attribute {name}: {source}")]
    Encode {
        name: &'static str,
        source: temporalio_common::search_attributes::SearchAttributeError,
    },
}

/// Which of [`ATTRIBUTES`] the namespace has, with the right type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present([bool; 5]);

impl Present {
    pub const NONE: Present = Present([false; 5]);
    /// Every attribute registered (the unit tests).
    #[cfg(test)]
    pub const ALL: Present = Present([true; 5]);

    /// From the namespace's custom attributes (name → `IndexedValueType` as i32). An
    /// attribute registered with another type counts as missing: a value of ours would be
    /// refused.
    pub fn from_registered<'a>(registered: impl IntoIterator<Item = (&'a str, i32)>) -> Self {
        let mut present = [false; 5];
        for (name, kind) in registered {
            for (i, (wanted, wanted_kind)) in ATTRIBUTES.iter().enumerate() {
                if name == *wanted && kind == *wanted_kind as i32 {
                    present[i] = true;
                }
            }
        }
        Present(present)
    }

    pub fn has(&self, name: &str) -> bool {
        ATTRIBUTES
            .iter()
            .zip(self.0)
            .any(|((n, _), present)| *n == name && present)
    }

    /// The missing attributes as (name, type) pairs.
    pub fn missing(&self) -> Vec<(&'static str, &'static str)> {
        ATTRIBUTES
            .iter()
            .zip(self.0)
            .filter(|(_, present)| !present)
            .map(|((name, kind), _)| (*name, type_name(*kind)))
            .collect()
    }
}

fn type_name(kind: IndexedValueType) -> &'static str {
    match kind {
        IndexedValueType::Int => "Int",
        IndexedValueType::Keyword => "Keyword",
        IndexedValueType::Text => "Text",
        IndexedValueType::Double => "Double",
        IndexedValueType::Bool => "Bool",
        IndexedValueType::Datetime => "Datetime",
        IndexedValueType::KeywordList => "KeywordList",
        IndexedValueType::Unspecified => "Unspecified",
    }
}

/// The one line an operator needs: what is missing and the command that adds it.
pub fn missing_message(namespace: &str, present: Present) -> Option<String> {
    let missing = present.missing();
    if missing.is_empty() {
        return None;
    }
    let names: Vec<&str> = missing.iter().map(|(name, _)| *name).collect();
    let flags: Vec<String> = missing
        .iter()
        .map(|(name, kind)| format!("--name {name} --type {kind}"))
        .collect();
    Some(format!(
        "namespace {namespace} lacks the search attributes {}: workflows carry them in their \
         memo only, so `temporal workflow list --query` cannot find firings by them; add them \
         with `temporal operator search-attribute create --namespace {namespace} {}` (Temporal \
         Cloud: `tcld namespace search-attributes add --namespace {namespace} {}`); the relay \
         picks them up within {}s",
        names.join(", "),
        flags.join(" "),
        missing
            .iter()
            .map(|(name, kind)| format!("--sa \"{name}={kind}\""))
            .collect::<Vec<_>>()
            .join(" "),
        RECHECK.as_secs(),
    ))
}

/// Asks the namespace which of our attributes it has.
pub async fn check(client: &Client) -> Result<Present, SearchAttributeError> {
    let mut client = client.clone();
    let namespace = client.namespace();
    let request = ListSearchAttributesRequest {
        namespace: namespace.clone(),
    };
    let response =
        OperatorService::list_search_attributes(&mut client, tonic::Request::new(request))
            .await
            .map_err(|status| SearchAttributeError::List {
                namespace,
                code: status.code(),
                message: status.message().to_owned(),
            })?
            .into_inner();
    Ok(Present::from_registered(
        response
            .custom_attributes
            .iter()
            .map(|(name, kind)| (name.as_str(), *kind)),
    ))
}

/// What a firing is known by in Temporal.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub outbox_id: i64,
    pub trigger_id: i64,
    pub event_id: i64,
    /// The user pk and the trigger's name; None with TRIGGER_RELAY_VISIBILITY_PERSONAL_DATA
    /// false: the memo and the search attributes then carry the three ids only.
    pub personal: Option<PersonalData>,
}

/// The parts of a firing's visibility that are personal data, or may be.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonalData {
    /// None when the trigger was deleted meanwhile, or its table cannot be read.
    pub trigger_name: Option<String>,
    pub user_pk: String,
}

impl Firing {
    /// The memo: all five values (long strings cut, see [`MAX_MEMO_STRING_BYTES`]), or the
    /// three ids without the personal data.
    pub fn memo(&self) -> MemoValues {
        let mut memo = MemoValues::new();
        memo.insert(MEMO_KEYS[0], self.outbox_id)
            .insert(MEMO_KEYS[1], self.trigger_id)
            .insert(MEMO_KEYS[3], self.event_id);
        if let Some(personal) = &self.personal {
            memo.insert(
                MEMO_KEYS[2],
                personal
                    .trigger_name
                    .as_deref()
                    .map(|name| cut(name, MAX_MEMO_STRING_BYTES)),
            )
            .insert(MEMO_KEYS[4], cut(&personal.user_pk, MAX_MEMO_STRING_BYTES));
        }
        memo
    }

    /// The workflow's summary in the UI (a plain payload: the SDK does not encode it). The
    /// user pk is the site's text, of any length: the summary, like the memo, cuts it.
    pub fn summary(&self) -> String {
        match &self.personal {
            Some(personal) => format!(
                "outbox row {} (trigger {}, user {})",
                self.outbox_id,
                self.trigger_id,
                cut(&personal.user_pk, MAX_MEMO_STRING_BYTES)
            ),
            None => format!(
                "outbox row {} (trigger {})",
                self.outbox_id, self.trigger_id
            ),
        }
    }

    /// The search attributes the namespace has; None when that leaves none. A value that
    /// cannot be indexed (a keyword over [`MAX_KEYWORD_CHARS`], an absent name) is left out:
    /// the start must never fail for it.
    pub fn search_attributes(&self, present: Present) -> Option<SearchAttributes> {
        let mut updates = Vec::with_capacity(ATTRIBUTES.len());
        let mut set_int = |key: SearchAttributeKey<i64>, value: i64| {
            if present.has(key.name()) {
                push(&mut updates, key.name(), key.try_value_set(value));
            }
        };
        set_int(OUTBOX_ID, self.outbox_id);
        set_int(TRIGGER_ID, self.trigger_id);
        set_int(EVENT_ID, self.event_id);
        let personal = self.personal.as_ref();
        for (key, value) in [
            (
                TRIGGER_NAME,
                personal.and_then(|p| p.trigger_name.as_deref()),
            ),
            (USER_PK, personal.map(|p| p.user_pk.as_str())),
        ] {
            match value {
                Some(value) if present.has(key.name()) && indexable(value) => {
                    push(
                        &mut updates,
                        key.name(),
                        key.try_value_set(value.to_owned()),
                    );
                }
                _ => {}
            }
        }
        (!updates.is_empty()).then(|| SearchAttributes::new(updates))
    }
}

fn push(
    updates: &mut Vec<temporalio_common::search_attributes::SearchAttributeUpdate>,
    name: &'static str,
    update: Result<
        temporalio_common::search_attributes::SearchAttributeUpdate,
        temporalio_common::search_attributes::SearchAttributeError,
    >,
) {
    match update.map_err(|source| SearchAttributeError::Encode { name, source }) {
        Ok(update) => updates.push(update),
        Err(err) => tracing::warn!(error = %err, "search attribute left out"),
    }
}

/// `value`, or its longest prefix of at most `max` bytes ending at a character boundary
/// followed by `…`.
pub fn cut(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

/// The namespace's attributes as last checked, shared by the relay's dispatches.
pub struct Registry {
    namespace: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    present: Present,
    /// When the current answer expires; None: never checked, or invalidated.
    valid_until: Option<Instant>,
    /// What was logged last (the missing names, or the error), so a line is not repeated.
    logged: Option<String>,
}

impl Registry {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            state: Mutex::new(State::default()),
        }
    }

    /// The attributes to send now: the last answer while it holds, else a fresh check. A
    /// failed check means none (memo only) until the next attempt.
    pub async fn present(&self, client: &Client) -> Present {
        let mut state = self.state.lock().await;
        if state
            .valid_until
            .is_some_and(|until| Instant::now() < until)
        {
            return state.present;
        }
        match check(client).await {
            Ok(present) => {
                let note = missing_message(&self.namespace, present);
                let key = note.clone().unwrap_or_default();
                if state.logged.as_deref() != Some(key.as_str()) {
                    match &note {
                        Some(line) => tracing::warn!(
                            namespace = self.namespace,
                            missing = ?present.missing().iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                            "{line}"
                        ),
                        None => tracing::info!(
                            namespace = self.namespace,
                            "search attributes TriggerRelayOutboxId, TriggerId, TriggerName, \
                             EventId, UserPk present: firings are findable by them"
                        ),
                    }
                    state.logged = Some(key);
                }
                state.present = present;
                state.valid_until = Some(Instant::now() + RECHECK);
            }
            Err(err) => {
                let key = err.to_string();
                if state.logged.as_deref() != Some(key.as_str()) {
                    tracing::warn!(
                        error = %err,
                        retry_in = ?RECHECK_AFTER_ERROR,
                        "cannot tell which search attributes the namespace has; starting \
                         workflows with the memo only until the check succeeds"
                    );
                    state.logged = Some(key);
                }
                state.present = Present::NONE;
                state.valid_until = Some(Instant::now() + RECHECK_AFTER_ERROR);
            }
        }
        state.present
    }

    /// Forgets the last answer (a start was refused for a search attribute: one was removed
    /// or retyped meanwhile); the next dispatch checks again.
    pub async fn invalidate(&self) {
        self.state.lock().await.valid_until = None;
    }
}

/// True for a start refused because of its search attributes.
pub fn is_search_attribute_refusal(error: &str) -> bool {
    error.to_ascii_lowercase().contains("search attribute")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firing() -> Firing {
        Firing {
            outbox_id: 5,
            trigger_id: 7,
            event_id: 3,
            personal: Some(PersonalData {
                trigger_name: Some("Rappel « urgent » \"quoted\" 🚀".into()),
                user_pk: "42".into(),
            }),
        }
    }

    #[test]
    fn without_personal_data_only_ids_are_visible() {
        let firing = Firing {
            personal: None,
            ..firing()
        };
        let attrs = firing.search_attributes(Present::ALL).unwrap_or_default();
        assert_eq!(
            attrs.keys().collect::<Vec<_>>(),
            ["EventId", "TriggerId", "TriggerRelayOutboxId"]
        );
        let memo = firing.memo();
        let mut keys: Vec<_> = memo.iter().map(|(key, _)| key.to_owned()).collect();
        keys.sort();
        assert_eq!(keys, ["event_id", "outbox_id", "trigger_id"]);
        assert_eq!(firing.summary(), "outbox row 5 (trigger 7)");
    }

    #[test]
    fn a_huge_user_pk_is_cut_in_the_summary() {
        let with_pk = |user_pk: String| Firing {
            personal: Some(PersonalData {
                trigger_name: None,
                user_pk,
            }),
            ..firing()
        };
        assert_eq!(
            with_pk("42".into()).summary(),
            "outbox row 5 (trigger 7, user 42)"
        );
        let huge = with_pk("é".repeat(100_000)).summary();
        assert!(huge.len() < 600, "{} bytes", huge.len());
        assert!(huge.starts_with("outbox row 5 (trigger 7, user éé") && huge.ends_with("…)"));
    }

    #[test]
    fn a_refusal_for_an_unknown_attribute_is_recognised() {
        // The dev server's words (Server 1.32) for a start naming an unregistered attribute.
        assert!(is_search_attribute_refusal(
            "InvalidArgument: Namespace default has no mapping defined for search attribute UserPk"
        ));
        assert!(!is_search_attribute_refusal(
            "TaskQueue length exceeds limit."
        ));
    }

    #[test]
    fn registered_attributes_of_the_wrong_type_are_missing() {
        let present = Present::from_registered([
            ("TriggerId", IndexedValueType::Int as i32),
            ("UserPk", IndexedValueType::Text as i32),
            ("Unrelated", IndexedValueType::Int as i32),
        ]);
        assert!(present.has("TriggerId"));
        assert!(!present.has("UserPk"));
        let missing: Vec<_> = present.missing().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            missing,
            ["TriggerRelayOutboxId", "TriggerName", "EventId", "UserPk"]
        );
    }

    #[test]
    fn the_missing_line_names_the_command() {
        assert_eq!(missing_message("default", Present::ALL), None);
        let line = missing_message("prod", Present::NONE).unwrap_or_default();
        assert!(line.contains(
            "temporal operator search-attribute create --namespace prod \
             --name TriggerRelayOutboxId --type Int --name TriggerId --type Int \
             --name TriggerName --type Keyword --name EventId --type Int \
             --name UserPk --type Keyword"
        ));
        assert!(line.contains("--sa \"UserPk=Keyword\""));
    }

    #[test]
    fn only_present_attributes_are_sent() {
        assert_eq!(firing().search_attributes(Present::NONE), None);
        let only = Present::from_registered([("UserPk", IndexedValueType::Keyword as i32)]);
        let attrs = firing().search_attributes(only).unwrap_or_default();
        assert_eq!(attrs.keys().collect::<Vec<_>>(), ["UserPk"]);
        let all = firing().search_attributes(Present::ALL).unwrap_or_default();
        assert_eq!(all.len(), 5);
        assert_eq!(all.get(&TRIGGER_ID), Some(7));
        assert_eq!(all.get(&USER_PK).as_deref(), Some("42"));
        assert_eq!(
            all.get(&TRIGGER_NAME).as_deref(),
            Some("Rappel « urgent » \"quoted\" 🚀")
        );
        let payload = all.raw_payload("TriggerId").cloned().unwrap_or_default();
        assert_eq!(
            payload.metadata.get("type").map(Vec::as_slice),
            Some(&b"Int"[..])
        );
    }

    #[test]
    fn bad_values_never_fail_a_start() {
        let mut f = firing();
        let user_pk = "é".repeat(100_000);
        f.personal = Some(PersonalData {
            trigger_name: None,
            user_pk: user_pk.clone(),
        });
        let attrs = f.search_attributes(Present::ALL).unwrap_or_default();
        assert!(!attrs.keys().any(|k| k == "UserPk" || k == "TriggerName"));
        assert_eq!(attrs.len(), 3);
        let memo = f.memo();
        assert_eq!(memo.iter().count(), 5);
        let cut_pk = cut(&user_pk, MAX_MEMO_STRING_BYTES);
        assert!(cut_pk.len() <= MAX_MEMO_STRING_BYTES && cut_pk.ends_with('…'));
        for max in 0..8 {
            let s = cut("🚀🚀🚀", max);
            assert!(s.ends_with('…') || s == "🚀🚀🚀", "{max}: {s}");
        }
    }
}
