//! trigger-relay: moves dj-triggers firings from a PostgreSQL outbox to Temporal.
//!
//! The binary (src/main.rs) is the product; the library exists so that it and the
//! integration tests (tests/*.rs) share the daemon's code: the tests drive the real `Db`,
//! decode the real workflow types and replay histories against the real workflow. Only what
//! src/main.rs and tests/*.rs use is `pub`, with the types its signatures name
//! (the subcommands' settings in `config::Command`, the errors `error::Error` carries).
//! docs/architecture.md follows a firing through these modules.
//!
//! # Layout
//!
//! Configuration
//! - [`config`]: every setting, parsed once at start (clap, environment variables,
//!   `*_FILE` secrets) into typed structs.
//!
//! Database
//! - [`db`]: the pool and its timeouts and metrics, and one typed function per statement of
//!   `sql/queries/` (claim, outcome, operator, upkeep), with libpq's `sslmode`.
//! - [`outbox`]: the vocabulary of a row's states, the activity's outcomes and the skip
//!   reasons (checked against the schema and docs/contract.md), the workflow's input and
//!   outcome, decoding a claimed row (poison rows).
//!
//! The relay
//! - `relay`: claim → start → mark (`Relay::drain`), LISTEN/NOTIFY, the reconciler,
//!   retention and the backlog gauges.
//! - `backoff`: retry delays with jitter.
//!
//! Temporal
//! - `temporal`: the client: connecting (TLS, API key), idempotent starts.
//! - [`workflow`]: `trigger_workflow` and the daemon's outbox activities.
//! - `worker`: the hosted worker of `trigger_workflow`.
//! - `search_attributes`: the memo and search attributes that make a firing findable.
//! - [`histories`]: replaying recorded histories (the tests' and `replay-histories`).
//! - [`codec`]: payload encryption, its keys and the codec HTTP endpoint.
//!
//! HTTP and metrics
//! - `http`: the `/metrics`, `/healthz` and `/readyz` server.
//! - `health`: liveness and readiness, from what the tasks report.
//! - [`metrics`]: the daemon's Prometheus metrics.
//! - `sdk_metrics`: the Temporal SDK's metrics, on the same registry.
//!
//! The command line
//! - [`cli`]: one module per subcommand (`status`, `replay`, `cancel`, `replay-histories`)
//!   and their shared, escaped output.
//! - `run`: the `run` subcommand: the relay, the worker, the HTTP server and the
//!   background tasks under one cancellation token, supervised.
//! - `shutdown`: the cancellation token and the signals that trip it.
//! - [`error`]: the error that ends a command.

pub mod config;

pub mod db;
pub mod outbox;

mod backoff;
mod relay;

pub mod codec;
pub mod histories;
mod search_attributes;
mod temporal;
mod worker;
pub mod workflow;

mod health;
mod http;
pub mod metrics;
mod sdk_metrics;

pub mod cli;
pub mod error;
mod run;
mod shutdown;
