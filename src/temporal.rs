//! The Temporal side of the relay: connecting (dev server, TLS/mTLS, API key) and idempotent
//! starts of `trigger_workflow` (SPEC §4.3, §5.4).

use std::time::Duration;

use temporalio_client::errors::WorkflowStartError;
use temporalio_client::grpc::WorkflowService;
use temporalio_client::tonic::{self, Code};
use temporalio_client::{
    Client, ClientOptions, ClientTlsOptions, Connection, ConnectionOptions, NamespacedClient,
    RetryOptions, TlsOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy,
    WorkflowStartOptions,
};
use temporalio_common::protos::temporal::api::workflowservice::v1::DescribeNamespaceRequest;

use crate::config::TemporalConfig;
use crate::outbox::WorkflowInput;
use crate::workflow::TriggerWorkflow;

#[derive(Debug, thiserror::Error)]
pub enum TemporalError {
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to Temporal at {address}: {source}")]
    Connect {
        address: String,
        source: Box<temporalio_client::errors::ClientConnectError>,
    },
    #[error("invalid Temporal client options: {0}")]
    Client(String),
}

/// Outcome of one start attempt.
#[derive(Debug)]
pub enum StartOutcome {
    /// A new run was created.
    Started { run_id: String },
    /// The workflow id exists already (running or closed): this row was dispatched before,
    /// by this or another replica (SPEC §4.3).
    AlreadyStarted { run_id: Option<String> },
    /// Temporal refused the start for good (e.g. payload over its limits): fail the row.
    Rejected { error: String },
    /// Temporal is unreachable or overloaded: keep the row pending and back off.
    Unavailable { error: String },
}

fn read_file(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, TemporalError> {
    std::fs::read(path).map_err(|source| TemporalError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

fn connection_options(
    config: &TemporalConfig,
    identity: &str,
) -> Result<ConnectionOptions, TemporalError> {
    let tls = if config.tls_enabled() {
        let client_tls_options = match (&config.temporal_tls_cert, &config.temporal_tls_key) {
            (Some(cert), Some(key)) => Some(
                ClientTlsOptions::builder()
                    .client_cert(read_file("TLS client certificate", cert)?)
                    .client_private_key(read_file("TLS client key", key)?)
                    .build(),
            ),
            _ => None,
        };
        let server_root_ca_cert = config
            .temporal_tls_ca
            .as_deref()
            .map(|p| read_file("TLS CA certificate", p))
            .transpose()?;
        Some(
            TlsOptions::builder()
                .maybe_server_root_ca_cert(server_root_ca_cert)
                .maybe_domain(config.temporal_tls_server_name.clone())
                .maybe_client_tls_options(client_tls_options)
                .build(),
        )
    } else {
        None
    };
    // The relay has its own backoff around every call; keep the SDK's internal retries short
    // so an outage shows in readiness within seconds.
    let retry = RetryOptions::builder()
        .max_elapsed_time(Some(Duration::from_secs(5)))
        .max_retries(3)
        .build();
    Ok(ConnectionOptions::new(config.temporal_address.clone())
        .identity(identity.to_owned())
        .maybe_tls_options(tls)
        .maybe_api_key(config.temporal_api_key.clone())
        .connect_timeout(Duration::from_secs(5))
        .retry_options(retry)
        .build())
}

pub async fn connect(config: &TemporalConfig, identity: &str) -> Result<Client, TemporalError> {
    let options = connection_options(config, identity)?;
    let connection =
        Connection::connect(options)
            .await
            .map_err(|source| TemporalError::Connect {
                address: config.temporal_address.to_string(),
                source: Box::new(source),
            })?;
    Client::new(
        connection,
        ClientOptions::new(config.temporal_namespace.clone()).build(),
    )
    .map_err(|e| TemporalError::Client(e.to_string()))
}

/// A cheap call that proves the frontend answers and the namespace exists; used for
/// readiness while idle.
pub async fn probe(client: &Client) -> Result<(), tonic::Status> {
    let mut client = client.clone();
    let request = DescribeNamespaceRequest {
        namespace: client.namespace(),
        ..Default::default()
    };
    WorkflowService::describe_namespace(&mut client, tonic::Request::new(request))
        .await
        .map(|_| ())
}

/// Starts the row's workflow. Reuse policy RejectDuplicate and conflict policy Fail make a
/// second start of the same id (duplicate delivery, another replica, a lease that expired
/// mid-call) an `AlreadyStarted` error instead of a second run.
pub async fn start(
    client: &Client,
    task_queue: &str,
    workflow_id: &str,
    input: WorkflowInput,
) -> StartOutcome {
    let summary = format!(
        "outbox row {} (trigger {}, user {})",
        input.outbox_id, input.trigger_id, input.user_pk
    );
    let options = WorkflowStartOptions::new(task_queue.to_owned(), workflow_id.to_owned())
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
        .static_summary(summary)
        .build();
    match client
        .start_workflow(TriggerWorkflow::run, input, options)
        .await
    {
        Ok(handle) => StartOutcome::Started {
            run_id: handle.run_id().unwrap_or_default().to_owned(),
        },
        Err(WorkflowStartError::AlreadyStarted { run_id, .. }) => {
            StartOutcome::AlreadyStarted { run_id }
        }
        Err(WorkflowStartError::PayloadConversion(e)) => StartOutcome::Rejected {
            error: format!("cannot encode workflow input: {e}"),
        },
        Err(WorkflowStartError::Rpc(status)) => classify(&status),
        Err(other) => StartOutcome::Unavailable {
            error: other.to_string(),
        },
    }
}

/// Only errors that will fail the same way on every retry fail a row; anything that may be a
/// passing condition (including a missing namespace: a configuration error an operator will
/// fix) keeps it pending.
fn classify(status: &tonic::Status) -> StartOutcome {
    let error = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument => StartOutcome::Rejected { error },
        _ => StartOutcome::Unavailable { error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_invalid_argument_rejects() {
        let bad = tonic::Status::invalid_argument("blob size exceeds limit");
        assert!(matches!(classify(&bad), StartOutcome::Rejected { .. }));
        for status in [
            tonic::Status::unavailable("down"),
            tonic::Status::deadline_exceeded("slow"),
            tonic::Status::not_found("namespace default not found"),
            tonic::Status::resource_exhausted("rate limit"),
        ] {
            assert!(matches!(
                classify(&status),
                StartOutcome::Unavailable { .. }
            ));
        }
    }
}
