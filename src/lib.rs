//! trigger-relay: moves dj-triggers firings from a PostgreSQL outbox to Temporal.
//!
//! The binary (src/main.rs) is the product; the library exists so integration tests can
//! replay histories against the real workflow code.

pub mod backoff;
pub mod cancel;
pub mod cli_output;
pub mod cli_text;
pub mod codec;
pub mod config;
pub mod db;
pub mod error;
pub mod health;
pub mod histories;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod relay;
pub mod run;
pub mod sdk_metrics;
pub mod search_attributes;
pub mod shutdown;
pub mod temporal;
pub mod worker;
pub mod workflow;
