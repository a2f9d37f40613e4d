//! `trigger_workflow`: one firing of a trigger, from its due time to its recorded outcome
//! (guarantees §3, §5.1).
//!
//! 1. Wait until the row's due time on a durable timer (a cancel request ends the wait).
//! 2. Run `trigger_relay.perform_firing` on the Django task queue (Python worker): fresh
//!    checks, `Activity.lock`, conditions re-checked, actions in order, each at most once.
//! 3. Record the outcome on the outbox row: `done` and `skipped` are recorded by the Python
//!    activity itself, in the firing's transaction, when it says so (`recorded`); anything
//!    else (a failure, a cancellation, a worker from before history version v3) through
//!    `record_outcome` on this daemon's queue.
//!
//! Determinism: the body uses only workflow time, timers and activities. Any change to the
//! commands it issues must go through `ctx.patched(..)`, or branch on what an activity
//! returned (step 3), and keep every history under tests/histories/ replaying
//! (docs/versioning.md, tests/replay.rs).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::IntCounterVec;
use temporalio_common::RetryPolicy;
use temporalio_macros::{activities, activity_definitions, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{
    ActivityOptions, TimerResult, WorkflowCancellationToken, WorkflowContext, WorkflowResult,
};

use crate::db::Db;
use crate::metrics::Metrics;
use crate::outbox::{FiringOutcome, FiringResult, Outcome, SkipReason, State, WorkflowInput};

/// Patch of the heartbeat timeout on perform_firing (guarantees §3.6), retired in history
/// version v4 (docs/versioning.md, "Removing a patch"): histories recorded from its
/// introduction until its retirement (tests/histories/v2, v3) carry its marker, and a replay
/// of them must ask for it; a live workflow task no longer writes it.
/// See [`perform_heartbeat_timeout`].
pub const PATCH_PERFORM_HEARTBEAT: &str = "perform-heartbeat-timeout-2026-11";

/// Timeouts and retries of the activities, from the daemon's configuration. They are not
/// part of the history's command sequence, so changing them needs no patch.
#[derive(Debug, Clone)]
pub struct WorkflowSettings {
    pub django_task_queue: String,
    pub perform_timeout: Duration,
    /// Zero: no heartbeat timeout.
    pub perform_heartbeat_timeout: Duration,
    pub perform_max_attempts: u32,
    pub record_timeout: Duration,
}

/// Declarations of the activities the Python worker serves.
pub struct DjangoActivities;

#[activity_definitions]
impl DjangoActivities {
    /// Served by the Python worker (`manage.py trigger_relay_worker`).
    #[activity(name = "trigger_relay.perform_firing")]
    pub fn perform_firing(_input: WorkflowInput) -> Result<FiringResult, ActivityError> {
        unimplemented!()
    }
}

#[workflow]
pub struct TriggerWorkflow {
    settings: WorkflowSettings,
    /// `trigger_relay_workflow_outcomes_total`, for outcomes the Python activity recorded
    /// (the others are counted by `record_outcome`). None when replaying histories.
    outcomes: Option<IntCounterVec>,
}

impl TriggerWorkflow {
    pub fn new(settings: WorkflowSettings, outcomes: Option<IntCounterVec>) -> Self {
        Self { settings, outcomes }
    }
}

#[workflow_methods(factory_only)]
impl TriggerWorkflow {
    #[run(name = "trigger_workflow")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: WorkflowInput,
    ) -> WorkflowResult<Outcome> {
        let settings = ctx.state(|w| w.settings.clone());
        let outcome = |state: State, reason: Option<String>, error: Option<String>| Outcome {
            outbox_id: input.outbox_id,
            generation: input.generation,
            firing_uuid: input.firing_uuid.clone(),
            state,
            reason,
            error,
            performed: Vec::new(),
            site: input.site.clone(),
        };

        // guarantees §3.1, §5.1: nothing before due time, on a timer that survives restarts.
        let now: Option<DateTime<Utc>> = ctx.workflow_time().map(DateTime::from);
        let wait = now
            .and_then(|now| (input.due_at - now).to_std().ok())
            .filter(|wait| !wait.is_zero());
        if let Some(wait) = wait
            && ctx.timer(wait).await == TimerResult::Cancelled
        {
            let cancelled = outcome(State::Cancelled, None, None);
            record(ctx, &settings, cancelled.clone()).await?;
            return Ok(cancelled);
        }
        if ctx.cancellation_token().is_cancelled() {
            let cancelled = outcome(State::Cancelled, None, None);
            record(ctx, &settings, cancelled.clone()).await?;
            return Ok(cancelled);
        }

        // A perform that has started runs to its end: its database work commits or rolls back
        // as a whole, so a cancel request cannot leave half the actions done.
        // guarantees §3.6: a dead Python worker is noticed within the heartbeat timeout.
        let heartbeat_timeout = perform_heartbeat_timeout(ctx, &settings);
        let perform = ActivityOptions::with_start_to_close_timeout(settings.perform_timeout)
            .maybe_heartbeat_timeout(heartbeat_timeout)
            .task_queue(settings.django_task_queue.clone())
            .retry_policy(
                RetryPolicy::builder()
                    .initial_interval(Duration::from_secs(1))
                    .backoff_coefficient(2.0)
                    .maximum_interval(Duration::from_secs(300))
                    .maximum_attempts(settings.perform_max_attempts)
                    .build(),
            )
            .cancellation_token(WorkflowCancellationToken::new())
            .summary(format!("perform firing of outbox row {}", input.outbox_id))
            .build();
        // The activity may record done or skipped itself, in the firing's transaction: the outcome
        // commits with the actions, and the workflow needs no second activity (6 of a firing's
        // history events, docs/performance.md). A worker that did not record says so, and the
        // workflow records as before; which branch ran is in the activity's result, so replay
        // takes the same one.
        let perform_input = WorkflowInput {
            record_outcome: true,
            ..input.clone()
        };
        let result = ctx
            .execute_activity(DjangoActivities::perform_firing, perform_input, perform)
            .await;
        let (final_outcome, recorded) = match result {
            Ok(firing) => match firing.outcome.parse::<FiringOutcome>() {
                Ok(FiringOutcome::Done) => (
                    Outcome {
                        performed: firing.performed,
                        ..outcome(State::Done, None, None)
                    },
                    firing.recorded,
                ),
                Ok(FiringOutcome::Skipped) => {
                    let reason = firing
                        .reason
                        .or_else(|| Some(SkipReason::Unspecified.as_str().to_owned()));
                    (outcome(State::Skipped, reason, None), firing.recorded)
                }
                // A word this build does not know (a worker of another release, a site's
                // own worker) fails the row with it, not the workflow task: the outcomes are
                // docs/contract.md's ("Activities").
                Err(unknown) => (
                    outcome(
                        State::Failed,
                        None,
                        Some(format!(
                            "unknown outcome {:?} from the Python worker",
                            unknown.word
                        )),
                    ),
                    false,
                ),
            },
            Err(err) => (
                outcome(State::Failed, None, Some(failure_message(&err))),
                false,
            ),
        };
        if recorded {
            // Counted once, when the workflow task first runs; a replay (a worker that
            // restarted, an evicted cache) does not count it again.
            if !ctx.is_replaying_history_events()
                && let Some(outcomes) = ctx.state(|w| w.outcomes.clone())
            {
                outcomes
                    .with_label_values(&[final_outcome.state.as_str()])
                    .inc();
            }
        } else {
            record(ctx, &settings, final_outcome.clone()).await?;
        }
        Ok(final_outcome)
    }
}

/// The heartbeat timeout perform_firing is scheduled with: the configured one (zero: none).
///
/// The heartbeat patch's marker made 2 of a firing's 13 history events (the marker and the
/// `TemporalChangeVersion` upsert core adds to it), for an option that replay does not compare.
/// So a live workflow task schedules perform_firing with the timeout and writes no marker,
/// and only a replaying one asks `patched`: where the history holds the marker (written by a
/// release from before its retirement, or by an older replica during a rolling upgrade) the
/// call consumes it, as that history's commands require; where it does not, the call returns
/// false and issues nothing. Either way the commands match the history; the options a
/// replayed schedule carries are the history's, not these. Old code replaying a history
/// without the marker takes its own `patched` as false in the same way, so replicas of both
/// releases can share a task queue.
fn perform_heartbeat_timeout(
    ctx: &WorkflowContext<TriggerWorkflow>,
    settings: &WorkflowSettings,
) -> Option<Duration> {
    let bounded = !ctx.is_replaying() || ctx.patched(PATCH_PERFORM_HEARTBEAT);
    Some(settings.perform_heartbeat_timeout).filter(|timeout| bounded && !timeout.is_zero())
}

fn failure_message(err: &temporalio_sdk::ActivityExecutionError) -> String {
    // The root cause (the Python exception) is what an operator needs in last_error. The
    // chain is the SDK's decoded one, not the failure protos': with payload encryption
    // (src/codec/) a proto's message is "Encoded failure" and the real one is in its
    // encrypted attributes, which only the decoded chain has restored.
    let mut message = err.to_string();
    if let Some(f) = err.failure()
        && !f.message.is_empty()
    {
        message = f.message.clone();
    }
    let mut cause = err.cause();
    while let Some(c) = cause {
        if !c.failure().message.is_empty() {
            message = c.failure().message.clone();
        }
        cause = c.cause();
    }
    message
}

async fn record(
    ctx: &mut WorkflowContext<TriggerWorkflow>,
    settings: &WorkflowSettings,
    outcome: Outcome,
) -> WorkflowResult<()> {
    // Recording must happen even when the workflow is being cancelled; it retries (with a
    // capped interval) until PostgreSQL answers.
    let options = ActivityOptions::with_start_to_close_timeout(settings.record_timeout)
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(60))
                .build(),
        )
        .cancellation_token(WorkflowCancellationToken::new())
        .build();
    ctx.execute_activity(OutboxActivities::record_outcome, outcome, options)
        .await?;
    Ok(())
}

/// Rust activities on the daemon's own task queue: outbox bookkeeping.
pub struct OutboxActivities {
    pub db: Db,
    pub metrics: Metrics,
    /// This daemon's site identity (docs/contract.md, "Site identity").
    pub site: String,
}

/// A task of another site that shares this namespace and task queue: refused before the
/// database is touched, and retryable, so that Temporal hands it to another worker (its
/// own site's, with luck) rather than this one writing into the wrong database.
#[derive(Debug, thiserror::Error)]
#[error(
    "outbox row {outbox_id} belongs to site {theirs}, but this daemon serves site {ours}: \
     each site needs task queues (or a namespace) of its own (docs/contract.md, \"Site \
     identity\")"
)]
pub struct ForeignSite {
    pub outbox_id: i64,
    pub theirs: String,
    pub ours: String,
}

#[activities]
impl OutboxActivities {
    #[activity(name = "trigger_relay.record_outcome")]
    pub async fn record_outcome(
        self: Arc<Self>,
        ctx: ActivityContext,
        outcome: Outcome,
    ) -> Result<bool, ActivityError> {
        if let Some(theirs) = outcome.site.as_deref()
            && theirs != self.site
        {
            self.metrics.foreign_site_tasks.inc();
            let refused = ForeignSite {
                outbox_id: outcome.outbox_id,
                theirs: theirs.to_owned(),
                ours: self.site.clone(),
            };
            tracing::error!(error = %refused, "task of another site refused");
            return Err(refused.into());
        }
        // Who calls, as Temporal says (never the input): record_outcome.sql writes only for
        // the row's own workflow run (README, "Security model").
        let info = ctx.info();
        let workflow_id = info.workflow_id.as_deref().unwrap_or_default();
        let run_id = info.workflow_run_id.as_deref().unwrap_or_default();
        let applied = self
            .db
            .record_outcome(&outcome, workflow_id, run_id)
            .await?;
        if applied {
            self.metrics
                .workflow_outcomes
                .with_label_values(&[outcome.state.as_str()])
                .inc();
        }
        tracing::info!(
            outbox_id = outcome.outbox_id,
            generation = outcome.generation,
            state = outcome.state.as_str(),
            reason = outcome.reason,
            error = outcome.error,
            performed = ?outcome.performed,
            applied,
            "firing finished"
        );
        Ok(applied)
    }
}
