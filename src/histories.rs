//! Replay protection (SPEC §5.2): replays recorded `trigger_workflow` histories against this
//! build's workflow code. Used by `trigger-relay replay-histories` (live server or files) and
//! by tests/replay.rs (the histories committed under tests/histories/).

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
pub async fn fetch_recent(
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
            .map_err(|e| HistoryError::Fetch(format!("{name}: {e}")))?;
        // Decrypted with the client's keys (src/codec/), if any: the replayer's own data
        // converter has none, and `--save-dir` writes what an operator can read.
        let mut history = History { events };
        decode_payloads(
            &mut history,
            client.data_converter().codec(),
            &SerializationContextData::Workflow(WorkflowSerializationContext::new()),
        )
        .await
        .map_err(|e| HistoryError::Fetch(format!("{name}: cannot decode: {e}")))?;
        let json = serde_json::to_vec(&history)
            .map_err(|e| HistoryError::Fetch(format!("{name}: {e}")))?;
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
                let _ = writeln!(out, "ok    {name}");
            }
            Some(failure) => {
                failed += 1;
                let _ = writeln!(out, "FAIL  {name}: {failure}");
            }
        }
    }
    if failed > 0 {
        return Err(HistoryError::Nondeterministic { failed, total });
    }
    Ok(total)
}

/// Writes each fetched history as `{name}.json` into `dir` (to record fixtures).
pub fn save(histories: &[(String, Vec<u8>)], dir: &Path) -> Result<(), HistoryError> {
    std::fs::create_dir_all(dir).map_err(|source| HistoryError::Write {
        path: dir.to_owned(),
        source,
    })?;
    for (name, json) in histories {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, json).map_err(|source| HistoryError::Write { path, source })?;
    }
    Ok(())
}
