//! `trigger-relay replay-histories`: replay recorded histories (a live server's or a
//! directory's) against this build's workflow code, one line per history.

use std::io::Write;

use crate::config::ReplayHistoriesConfig;
use crate::error::Error;
use crate::histories::{self, HistoryError};
use crate::temporal;

/// Replays recorded histories (a live server's or a directory's) against this build;
/// non-zero on nondeterminism or when there was nothing to replay (a deploy gate).
pub async fn replay_histories(config: ReplayHistoriesConfig) -> Result<(), Error> {
    let replayer = histories::replayer(config.worker.workflow_settings())?;
    let recorded = match &config.dir {
        Some(dir) => histories::load_dir(dir)?,
        None => {
            let client = temporal::connect(&config.temporal, "trigger-relay-replay").await?;
            let fetched = histories::fetch_recent(&client, &config.query, config.limit).await?;
            if let Some(save_dir) = &config.save_dir {
                histories::save(&fetched, save_dir)?;
            }
            fetched
                .into_iter()
                .map(|(name, json)| {
                    temporalio_client::WorkflowHistory::from_json(&json)
                        .map(|h| (name.clone(), h))
                        .map_err(|e| HistoryError::Fetch(format!("{name}: {e}")))
                })
                .collect::<Result<_, _>>()?
        }
    };
    // A deploy gate that replayed nothing proved nothing: a wrong query, namespace or
    // directory must not pass as "all deterministic".
    if recorded.is_empty() {
        let source = match &config.dir {
            Some(dir) => format!("no *.json history in {}", dir.display()),
            None => format!(
                "no workflow matched {:?} in namespace {}",
                config.query, config.temporal.temporal_namespace
            ),
        };
        return Err(HistoryError::Nothing(source).into());
    }
    let mut out = std::io::stdout().lock();
    let total = histories::replay_all(&replayer, recorded, &mut out).await?;
    writeln!(out, "{total} histories replayed, all deterministic")?;
    Ok(())
}
