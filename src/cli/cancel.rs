//! `trigger-relay cancel` (guarantees §5.1): stop firings that have not been performed.

use std::io::Write;

use temporalio_client::{UntypedWorkflow, WorkflowCancelOptions};

use super::output::{self, escape};
use crate::config::CancelConfig;
use crate::db::{CancelSelection, Db};
use crate::error::Error;
use crate::outbox::State;
use crate::temporal;

#[derive(Debug, serde::Serialize)]
struct Cancelled {
    id: i64,
    previous_state: String,
    trigger_id: i64,
    user_pk: String,
    action: String,
}

pub async fn cancel(config: CancelConfig) -> Result<(), Error> {
    if config.ids.is_empty() && config.triggers.is_empty() && config.users.is_empty() {
        return Err(Error::Config(
            "cancel needs at least one of --id, --trigger, --user".into(),
        ));
    }
    let db = Db::for_command(&config.database)?;
    db.check_schema().await?;
    let selection = CancelSelection {
        ids: (!config.ids.is_empty()).then(|| config.ids.clone()),
        triggers: (!config.triggers.is_empty()).then(|| config.triggers.clone()),
        users: (!config.users.is_empty()).then(|| config.users.clone()),
    };
    let candidates = db.select_for_cancel(&selection).await?;
    // Connect before changing anything, so an unreachable Temporal leaves every row as it was.
    // The states come from the row (its CHECK constraint); a word this build does not know
    // is neither pending nor dispatched, as before.
    let any_dispatched = candidates
        .iter()
        .any(|c| c.state.parse() == Ok(State::Dispatched));
    let client = if any_dispatched && !config.dry_run {
        Some(temporal::connect(&config.temporal, "trigger-relay-cancel").await?)
    } else {
        None
    };
    let cancelled_pending = db.cancel_pending(&selection, config.dry_run).await?;

    let mut report = Vec::new();
    let mut failed_requests = 0usize;
    for candidate in &candidates {
        let action = if candidate.state.parse() == Ok(State::Pending) {
            if config.dry_run {
                "would cancel".to_owned()
            } else if cancelled_pending.contains(&candidate.id) {
                "cancelled".to_owned()
            } else {
                "left alone (dispatched meanwhile; run cancel again)".to_owned()
            }
        } else if config.dry_run {
            "would request workflow cancellation".to_owned()
        } else {
            match (&client, &candidate.workflow_id) {
                (Some(client), Some(workflow_id)) => {
                    let handle = client.get_workflow_handle::<UntypedWorkflow>(workflow_id.clone());
                    match handle.cancel(WorkflowCancelOptions::default()).await {
                        Ok(()) => "workflow cancellation requested".to_owned(),
                        Err(err) => {
                            failed_requests += 1;
                            format!("workflow cancellation failed: {err}")
                        }
                    }
                }
                _ => "no workflow id recorded".to_owned(),
            }
        };
        report.push(Cancelled {
            id: candidate.id,
            previous_state: candidate.state.clone(),
            trigger_id: candidate.trigger_id,
            user_pk: candidate.user_pk.clone(),
            action,
        });
    }

    let mut out = std::io::stdout().lock();
    if config.json {
        let doc = serde_json::json!({ "dry_run": config.dry_run, "rows": report });
        writeln!(out, "{}", output::json(&doc))?;
    } else {
        print_report(&mut out, &report)?;
    }
    // A script must not read "done" when some workflows were not asked to cancel.
    if failed_requests > 0 {
        return Err(Error::Incomplete(format!(
            "{failed_requests} workflow cancellation request(s) failed; run cancel again"
        )));
    }
    Ok(())
}

fn print_report(out: &mut impl Write, report: &[Cancelled]) -> Result<(), Error> {
    writeln!(out, "{} row(s)", report.len())?;
    for r in report {
        writeln!(
            out,
            "{:>10} {:<10} trigger {:<6} user {:<12} {}",
            r.id,
            escape(&r.previous_state),
            r.trigger_id,
            escape(&r.user_pk),
            escape(&r.action)
        )?;
    }
    Ok(())
}
