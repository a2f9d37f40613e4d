//! Readiness, owned in one place: each dependency's state with its last success and last
//! error, and the process's own long-running tasks. `/readyz` is 200 only while PostgreSQL
//! and Temporal both answered their last call and no task has died.

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
        let was = self.with(|s| {
            let dep = dependency(s, component);
            let was = dep.ok;
            dep.ok = false;
            if error.is_some() {
                dep.last_error = error.clone();
            }
            was
        });
        if was {
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

    pub fn ok(&self, component: Component) -> bool {
        self.with(|s| dependency(s, component).ok)
    }

    pub fn ready(&self) -> bool {
        self.with(|s| s.postgres.ok && s.temporal.ok && s.dead_task.is_none())
    }

    /// What `/readyz` shows.
    pub fn report(&self) -> serde_json::Value {
        self.with(|s| {
            let dep = |d: &Dependency| {
                serde_json::json!({
                    "ok": d.ok,
                    "seconds_since_success": d.last_success.map(|t| t.elapsed().as_secs_f64()),
                    "last_error": d.last_error,
                })
            };
            serde_json::json!({
                "ready": s.postgres.ok && s.temporal.ok && s.dead_task.is_none(),
                "postgres": s.postgres.ok,
                "temporal": s.temporal.ok,
                "dependencies": {"postgres": dep(&s.postgres), "temporal": dep(&s.temporal)},
                "dead_task": s.dead_task,
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
