//! `trigger-relay replay`: re-dispatch rows by hand with a new generation (and so a new
//! workflow id), as a table or `--json`.

use std::io::Write;

use super::output::{self, escape};
use crate::config::ReplayConfig;
use crate::db::{Db, ReplaySelection};
use crate::error::Error;
use crate::outbox::State;

pub async fn replay(config: ReplayConfig) -> Result<(), Error> {
    if !config.has_selector() {
        return Err(Error::Config(
            "replay needs at least one of --id, --id-range, --state, --trigger, \
             --created-after, --created-before"
                .into(),
        ));
    }
    if config.states.contains(&State::Pending) {
        return Err(Error::Config(
            "pending rows are already on their way and cannot be replayed".into(),
        ));
    }
    let db = Db::for_command(&config.database)?;
    db.check_schema().await?;
    let selection = replay_selection(&config, replay_states(&config));
    let rows = db.replay(&selection, config.dry_run).await?;
    // Rows named by --id that the default left alone, so that the operator learns why
    // and what to add (`--state cancelled`) instead of reading "replayed 0 row(s)".
    let left_alone = if config.states.is_empty() && !config.ids.is_empty() {
        let finished_on_purpose = replay_selection(&config, FINISHED_ON_PURPOSE.to_vec());
        db.replay(&finished_on_purpose, true).await?
    } else {
        Vec::new()
    };
    let mut out = std::io::stdout().lock();
    if config.json {
        let left: Vec<_> = left_alone
            .iter()
            .map(|r| serde_json::json!({"id": r.id, "state": r.state}))
            .collect();
        let doc = serde_json::json!({
            "dry_run": config.dry_run,
            "rows": rows,
            "left_alone": left,
        });
        writeln!(out, "{}", output::json(&doc))?;
        return Ok(());
    }
    let verb = if config.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    let skipped = rows
        .iter()
        .filter(|r| !config.dry_run && !r.replayed)
        .count();
    writeln!(out, "{verb} {} row(s)", rows.len() - skipped)?;
    if skipped > 0 {
        writeln!(
            out,
            "{skipped} row(s) changed state while listing and were left alone"
        )?;
    }
    for r in &left_alone {
        let state = escape(&r.state);
        writeln!(
            out,
            "row {} is {state} (finished on purpose) and was left alone; \
             add --state {state} to replay it",
            r.id
        )?;
    }
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "{:>10} {:<10} {:>8} {:>8} {:<12} {:>4} -> {:<4} PREVIOUS WORKFLOW",
        "ID", "STATE", "TRIGGER", "EVENT", "USER", "GEN", "GEN"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:>10} {:<10} {:>8} {:>8} {:<12} {:>4} -> {:<4} {}",
            r.id,
            escape(&r.state),
            r.trigger_id,
            r.event_id,
            escape(&r.user_pk),
            r.generation,
            r.new_generation,
            escape(r.workflow_id.as_deref().unwrap_or("-"))
        )?;
    }
    Ok(())
}

/// Rows an operator or the site's conditions finished on purpose: a replay would perform
/// what was meant not to happen, so only `--state` picks them.
const FINISHED_ON_PURPOSE: [State; 2] = [State::Cancelled, State::Skipped];

/// The states a replay picks (README, "The command line"; docs/contract.md, "Operator
/// commands"). `--state` names them. Without it, `--id-range`, `--trigger` and
/// `--created-after/-before` pick `failed` rows only: a replay performs the trigger's
/// actions as they are now, so sweeping `done` rows would perform every action added since
/// on each of them. Rows named one by one with `--id` are picked when `failed` or `done` (a
/// deliberate re-run). `dispatched` rows need `--include-dispatched` either way (the query's
/// own guard), and `pending` rows are never picked.
fn replay_states(config: &ReplayConfig) -> Vec<State> {
    if !config.states.is_empty() {
        return config.states.clone();
    }
    if config.ids.is_empty() {
        vec![State::Failed, State::Dispatched]
    } else {
        vec![State::Failed, State::Done, State::Dispatched]
    }
}

fn replay_selection(config: &ReplayConfig, states: Vec<State>) -> ReplaySelection {
    let non_empty = |v: &Vec<i64>| (!v.is_empty()).then(|| v.clone());
    ReplaySelection {
        ids: non_empty(&config.ids),
        id_from: config.id_range.and_then(|r| r.from),
        id_to: config.id_range.and_then(|r| r.to),
        states: Some(states),
        triggers: non_empty(&config.triggers),
        created_after: config.created_after,
        created_before: config.created_before,
        include_dispatched: config.include_dispatched,
    }
}
