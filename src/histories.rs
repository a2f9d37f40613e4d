//! Replay protection (guarantees §5.2): replays recorded `trigger_workflow` histories against
//! this build's workflow code. Used by `trigger-relay replay-histories` (live server or files)
//! and by tests/replay.rs (the histories committed under tests/histories/).

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use temporalio_client::{
    Client, NamespacedClient, WorkflowExecutionInfo, WorkflowFetchHistoryOptions, WorkflowHistory,
    WorkflowListOptions,
};
use temporalio_common::data_converters::{SerializationContextData, WorkflowSerializationContext};
use temporalio_common::payload_visitor::decode_payloads;
use temporalio_common::protos::temporal::api::history::v1::History;
use temporalio_sdk::workflow_replayer::{
    WorkflowReplayResult, WorkflowReplayer, WorkflowReplayerOptions,
};

use crate::cli::escape;
use crate::workflow::{TriggerWorkflow, WorkflowSettings};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("nothing to replay: {0}")]
    Nothing(String),
    #[error("cannot read history {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot list or fetch histories: {0}")]
    Fetch(String),
    #[error("cannot write history {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("replay could not run: {0}")]
    Replay(String),
    #[error("{failed} of {total} histories do not replay against this build (nondeterminism)")]
    Nondeterministic { failed: usize, total: usize },
}

/// A replayer with this build's `trigger_workflow`.
pub fn replayer(settings: WorkflowSettings) -> Result<WorkflowReplayer, HistoryError> {
    let options = WorkflowReplayerOptions::new()
        .register_workflow_with_factory::<TriggerWorkflow, _>(move || {
            TriggerWorkflow::new(settings.clone(), None)
        })
        .map_err(|e| HistoryError::Replay(e.to_string()))?
        .build();
    WorkflowReplayer::new(options).map_err(|e| HistoryError::Replay(e.to_string()))
}

/// Every `*.json` history in `dir`, sorted by file name, with its path.
pub fn load_dir(dir: &Path) -> Result<Vec<(String, WorkflowHistory)>, HistoryError> {
    let read_error = |message: String| HistoryError::Read {
        path: dir.to_owned(),
        message,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| read_error(e.to_string()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).map_err(|e| HistoryError::Read {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let history = WorkflowHistory::from_json(&bytes).map_err(|e| HistoryError::Read {
                path: path.clone(),
                message: e.to_string(),
            })?;
            Ok((path.display().to_string(), history))
        })
        .collect()
}

/// Fetches up to `limit` histories matching `query`, most recent first, as JSON.
pub(crate) async fn fetch_recent(
    client: &Client,
    query: &str,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, HistoryError> {
    let mut stream = client.list_workflows(
        query.to_owned(),
        WorkflowListOptions::builder().limit(limit).build(),
    );
    let mut histories = Vec::new();
    while let Some(execution) = stream.next().await {
        let execution = execution.map_err(|e| HistoryError::Fetch(e.to_string()))?;
        // As Temporal has it: whoever starts a workflow chooses its id, so it is escaped
        // where printed and sanitized where it names a file (`save`).
        let name = format!("{}_{}", execution.id(), execution.run_id());
        let history = WorkflowExecutionInfo::builder()
            .namespace(client.namespace())
            .workflow_id(execution.id())
            .run_id(execution.run_id())
            .build()
            .bind_untyped(client.clone())
            .fetch_history(WorkflowFetchHistoryOptions::default());
        // Materialize now so a fetch error names its workflow.
        let events = history
            .into_events()
            .await
            .map_err(|e| HistoryError::Fetch(format!("{}: {e}", escape(&name))))?;
        // Decrypted with the client's keys (src/codec/), if any: the replayer's own data
        // converter has none, and `--save-dir` writes what an operator can read.
        let mut history = History { events };
        decode_payloads(
            &mut history,
            client.data_converter().codec(),
            &SerializationContextData::Workflow(WorkflowSerializationContext::new()),
        )
        .await
        .map_err(|e| HistoryError::Fetch(format!("{}: cannot decode: {e}", escape(&name))))?;
        let json = serde_json::to_vec(&history)
            .map_err(|e| HistoryError::Fetch(format!("{}: {e}", escape(&name))))?;
        histories.push((name, json));
    }
    Ok(histories)
}

/// Replays and reports one line per history; errors if any is nondeterministic.
pub async fn replay_all(
    replayer: &WorkflowReplayer,
    histories: Vec<(String, WorkflowHistory)>,
    out: &mut impl Write,
) -> Result<usize, HistoryError> {
    let total = histories.len();
    let (names, histories): (Vec<_>, Vec<_>) = histories.into_iter().unzip();
    let results: Vec<WorkflowReplayResult> = replayer
        .replay_workflows(histories)
        .await
        .map_err(|e| HistoryError::Replay(e.to_string()))?;
    let mut failed = 0;
    for (name, result) in names.iter().zip(results) {
        match result.replay_failure {
            None => {
                let _ = writeln!(out, "ok    {}", escape(name));
            }
            Some(failure) => {
                failed += 1;
                let _ = writeln!(
                    out,
                    "FAIL  {}: {}",
                    escape(name),
                    escape(&failure.to_string())
                );
            }
        }
    }
    if failed > 0 {
        return Err(HistoryError::Nondeterministic { failed, total });
    }
    Ok(total)
}

/// Writes each fetched history as `{file_name(name)}.json` into `dir` (to record
/// fixtures); two names that sanitize alike get `-2`, `-3`... so none overwrites another.
pub(crate) fn save(histories: &[(String, Vec<u8>)], dir: &Path) -> Result<(), HistoryError> {
    std::fs::create_dir_all(dir).map_err(|source| HistoryError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let mut taken = std::collections::HashSet::new();
    for (name, json) in histories {
        let base = file_name(name);
        let mut stem = base.clone();
        let mut n = 1;
        while !taken.insert(stem.clone()) {
            n += 1;
            stem = format!("{base}-{n}");
        }
        let path = dir.join(format!("{stem}.json"));
        std::fs::write(&path, json).map_err(|source| HistoryError::Write { path, source })?;
    }
    Ok(())
}

/// Longest file name stem taken from a workflow id, in bytes: with the hash and `.json` it
/// stays far below the 255 bytes file systems allow.
const MAX_STEM: usize = 180;

/// A file name stem for the history `name` (`{workflow id}_{run id}`): its ASCII letters,
/// digits, `-`, `_` and single dots, everything else `_` (no `/`, no `..`, no leading dot,
/// no control character), at most [`MAX_STEM`] bytes of it. When that changed the name, a
/// hash of the whole name follows (`-` and 16 hex digits), so distinct workflow ids stay
/// distinct files while the stem stays recognisable.
pub(crate) fn file_name(name: &str) -> String {
    let mut stem = String::with_capacity(name.len().min(MAX_STEM));
    for c in name.chars() {
        if stem.len() >= MAX_STEM {
            break;
        }
        let keep = c.is_ascii_alphanumeric()
            || c == '-'
            || c == '_'
            || (c == '.' && !stem.is_empty() && !stem.ends_with('.'));
        stem.push(if keep { c } else { '_' });
    }
    if stem == name {
        return stem;
    }
    format!("{stem}-{:016x}", fnv1a(name.as_bytes()))
}

/// 64-bit FNV-1a: stable across builds and platforms (a name saved today is the name saved
/// tomorrow), which `std`'s hasher does not promise.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "0199c7a2-5e0e-7f3a-9a39-1d2b7d3c4e5f";

    #[test]
    fn plain_names_are_kept() {
        let name = format!("trigger-outbox-42-g1_{RUN}");
        assert_eq!(file_name(&name), name);
        assert_eq!(file_name("a.b_c"), "a.b_c");
    }

    #[test]
    fn unsafe_names_are_sanitized_and_stay_distinct() {
        for name in [
            format!("../x_{RUN}"),
            format!("../../etc/passwd_{RUN}"),
            format!("/abs/path_{RUN}"),
            format!(".hidden_{RUN}"),
            format!("a\u{0}b\u{1b}[2J\nc_{RUN}"),
            format!("été_{RUN}"),
            format!("{}_{RUN}", "x".repeat(5000)),
            "..".to_owned(),
            ".".to_owned(),
        ] {
            let stem = file_name(&name);
            assert!(
                !stem.contains('/') && !stem.contains("..") && !stem.starts_with('.'),
                "{stem}"
            );
            assert!(stem.chars().all(|c| c.is_ascii_graphic()), "{stem:?}");
            assert!(stem.len() <= MAX_STEM + 17, "{} bytes", stem.len());
            assert_ne!(stem, name);
        }
        // Recognisable: the safe part of the id stays.
        assert!(file_name(&format!("../x_{RUN}")).starts_with(&format!("_._x_{RUN}-")));
        // Distinct ids that sanitize alike keep distinct names.
        assert_ne!(file_name("a/b"), file_name("a:b"));
        assert_ne!(
            file_name(&"y".repeat(300)),
            file_name(&format!("{}z", "y".repeat(300)))
        );
    }

    #[test]
    fn save_writes_every_history_inside_the_directory() {
        // A parent of this test's own, so that what escapes it is this run's alone.
        let parent =
            std::env::temp_dir().join(format!("trigger-relay-save-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&parent);
        let dir = parent.join("histories");
        let clash = file_name("a/b");
        let histories = vec![
            ("../escaped".to_owned(), b"1".to_vec()),
            ("a/b".to_owned(), b"2".to_vec()),
            (clash.clone(), b"3".to_vec()),
        ];
        save(&histories, &dir).expect("save");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let parent_has_it = parent.join("escaped.json").exists();
        let _ = std::fs::remove_dir_all(&parent);
        assert!(
            !parent_has_it,
            "a history was written outside the directory"
        );
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&format!("{clash}.json")), "{names:?}");
        assert!(names.contains(&format!("{clash}-2.json")), "{names:?}");
    }
}
