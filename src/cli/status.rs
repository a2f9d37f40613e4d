//! `trigger-relay status`: rows per state, the backlog, the oldest pending age and the
//! recent failures, as a table or `--json`.

use std::io::Write;

use super::output::{self, escape};
use crate::config::StatusConfig;
use crate::db::Db;
use crate::error::Error;
use crate::outbox::State;

pub async fn status(config: StatusConfig) -> Result<(), Error> {
    let db = Db::for_command(&config.database)?;
    db.check_schema().await?;
    let (counts, failures) = db.status(config.failures).await?;
    let pending = counts
        .iter()
        .find(|c| c.state.parse() == Ok(State::Pending));
    let backlog = pending.map_or(0, |c| c.rows);
    let oldest = pending.and_then(|c| c.oldest_age_seconds);
    let failed = counts
        .iter()
        .find(|c| c.state.parse() == Ok(State::Failed))
        .map_or(0, |c| c.rows);
    let mut out = std::io::stdout().lock();
    if config.json {
        let doc = serde_json::json!({
            "backlog": backlog,
            "oldest_pending_age_seconds": oldest,
            "failed": failed,
            "states": counts,
            "recent_failures": failures,
        });
        writeln!(out, "{}", output::json(&doc))?;
        return Ok(());
    }
    writeln!(out, "backlog (pending rows): {backlog}")?;
    match oldest {
        Some(age) => writeln!(out, "oldest pending age:     {age:.1}s")?,
        None => writeln!(out, "oldest pending age:     -")?,
    }
    writeln!(out, "failed rows:            {failed}")?;
    writeln!(out)?;
    writeln!(out, "{:<12} {:>10}", "STATE", "ROWS")?;
    for c in &counts {
        writeln!(out, "{:<12} {:>10}", escape(&c.state), c.rows)?;
    }
    if !failures.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{:>10} {:>8} {:>8} {:<12} {:<20} ERROR",
            "ID", "TRIGGER", "EVENT", "USER", "FAILED AT"
        )?;
        for f in &failures {
            let at = f
                .finished_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            writeln!(
                out,
                "{:>10} {:>8} {:>8} {:<12} {:<20} {}",
                f.id,
                f.trigger_id,
                f.event_id,
                escape(&f.user_pk),
                at,
                escape(f.last_error.as_deref().unwrap_or(""))
            )?;
        }
    }
    Ok(())
}
