//! Readiness, owned in one place: each dependency's state with its last success and last
//! error, and the process's own long-running tasks. `/readyz` is 200 only while PostgreSQL
//! and Temporal both answered their last call and no task has died.
//!
//! `/readyz` answers anyone who reaches the metrics port, so its body names dependencies
//! and their states only; an error's text (hosts, users, certificate paths, server
//! messages) goes to the log, once when a dependency starts failing and again whenever the
//! error changes (docs/contract.md, "Daemon metrics").

use std::sync::Mutex;
use std::time::Instant;

use crate::db::DbError;
use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Postgres,
    Temporal,
}

impl Component {
    fn as_str(self) -> &'static str {
        match self {
            Component::Postgres => "postgres",
            Component::Temporal => "temporal",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Dependency {
    ok: bool,
    last_success: Option<Instant>,
    last_error: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    postgres: Dependency,
    temporal: Dependency,
    /// A task of the process that ended or panicked: the process is about to exit.
    dead_task: Option<String>,
}

pub struct Health {
    state: Mutex<State>,
    metrics: Metrics,
}

impl Health {
    pub fn new(metrics: Metrics) -> Self {
        metrics.ready.set(0);
        Self {
            state: Mutex::new(State::default()),
            metrics,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic while holding this lock cannot leave the state half-written (plain
        // assignments), so a poisoned lock is still usable.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let result = f(&mut state);
        let ready = state.postgres.ok && state.temporal.ok && state.dead_task.is_none();
        self.metrics.ready.set(i64::from(ready));
        result
    }

    pub fn set_ok(&self, component: Component) {
        let was = self.with(|s| {
            let dep = dependency(s, component);
            let was = dep.ok;
            dep.ok = true;
            dep.last_success = Some(Instant::now());
            was
        });
        if !was {
            tracing::info!(component = component.as_str(), "reachable");
        }
    }

    pub fn set_failing(&self, component: Component, error: Option<String>) {
        let (was, changed) = self.with(|s| {
            let dep = dependency(s, component);
            let was = dep.ok;
            dep.ok = false;
            let changed = error.is_some() && dep.last_error != error;
            if changed {
                dep.last_error = error.clone();
            }
            (was, changed)
        });
        // The log is where the detail is (not /readyz): every new error of a failing
        // dependency is logged, a repeat of the same one is not.
        if was || changed {
            tracing::warn!(
                component = component.as_str(),
                error,
                "unreachable; rows stay pending until it returns"
            );
        }
    }

    /// A PostgreSQL call's result: success proves reachability; only connection-level
    /// errors disprove it (a bad value in one row says nothing about the database).
    pub fn record_postgres<T>(&self, result: &Result<T, DbError>) {
        match result {
            Ok(_) => self.set_ok(Component::Postgres),
            Err(err) => self.postgres_error(err),
        }
    }

    pub fn postgres_error(&self, err: &DbError) {
        if err.is_connectivity() {
            self.set_failing(Component::Postgres, Some(err.to_string()));
        }
    }

    /// A long-running task ended unexpectedly: never ready again.
    pub fn task_died(&self, what: String) {
        self.with(|s| s.dead_task = Some(what));
    }

    /// What `/readyz` shows: names and states, never an error's text (see the module).
    pub fn report(&self) -> serde_json::Value {
        self.with(|s| {
            let dep = |d: &Dependency| {
                serde_json::json!({
                    "ok": d.ok,
                    "seconds_since_success": d.last_success.map(|t| t.elapsed().as_secs_f64()),
                })
            };
            serde_json::json!({
                "ready": s.postgres.ok && s.temporal.ok && s.dead_task.is_none(),
                "postgres": s.postgres.ok,
                "temporal": s.temporal.ok,
                "dependencies": {"postgres": dep(&s.postgres), "temporal": dep(&s.temporal)},
                "tasks_ok": s.dead_task.is_none(),
            })
        })
    }
}

fn dependency(state: &mut State, component: Component) -> &mut Dependency {
    match component {
        Component::Postgres => &mut state.postgres,
        Component::Temporal => &mut state.temporal,
    }
}
