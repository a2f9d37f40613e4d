//! The Temporal side of the relay: connecting (dev server, TLS/mTLS, API key) and idempotent
//! starts of `trigger_workflow` (guarantees §4.3, §5.4).

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
use temporalio_common::telemetry::metrics::TemporalMeter;

use crate::config::TemporalConfig;
use crate::outbox::WorkflowInput;
use crate::search_attributes::{Firing, Present};
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
    #[error("{0}")]
    Codec(#[from] crate::codec::keys::KeyFileError),
}

/// Outcome of one start attempt.
#[derive(Debug)]
pub enum StartOutcome {
    /// A new run was created.
    Started { run_id: String },
    /// The workflow id exists already (running or closed): this row was dispatched before,
    /// by this or another replica (guarantees §4.3).
    AlreadyStarted { run_id: Option<String> },
    /// Temporal refused this row's start for good (its payload over the server's limits):
    /// fail the row.
    RowRejected { error: String },
    /// Temporal refuses starts for a reason that holds for every row (bad task queue,
    /// unknown namespace, no permission): keep the rows pending, report not ready.
    Misconfigured { error: String },
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
    connect_with_metrics(config, identity, None).await
}

/// As [`connect`], with the SDK's request metrics (`temporal_request`,
/// `temporal_long_request`, their failures and latencies) recorded into `metrics`: the
/// hosted worker's client (src/worker.rs, src/sdk_metrics.rs).
pub async fn connect_with_metrics(
    config: &TemporalConfig,
    identity: &str,
    metrics: Option<TemporalMeter>,
) -> Result<Client, TemporalError> {
    // The keys first: a malformed key file is a configuration error, not a connection retry.
    let codec = config.codec.load()?;
    let mut options = connection_options(config, identity)?;
    options.metrics_meter = metrics;
    let connection =
        Connection::connect(options)
            .await
            .map_err(|source| TemporalError::Connect {
                address: config.temporal_address.to_string(),
                source: Box::new(source),
            })?;
    // The worker hosted on this client takes its data converter too (the SDK's Worker::new).
    Client::new(
        connection,
        ClientOptions::new(config.temporal_namespace.clone())
            .data_converter(crate::codec::data_converter(codec))
            .build(),
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
/// mid-call) an `AlreadyStarted` error instead of a second run. The workflow carries the
/// firing's memo always, and its search attributes that the namespace has (`present`); with
/// the codec keys (src/codec/) the client encrypts the input and the memo.
pub async fn start(
    client: &Client,
    task_queue: &str,
    workflow_id: &str,
    input: WorkflowInput,
    firing: &Firing,
    present: Present,
) -> StartOutcome {
    let summary = firing.summary();
    let options = WorkflowStartOptions::new(task_queue.to_owned(), workflow_id.to_owned())
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
        .static_summary(summary)
        .memo(firing.memo())
        .maybe_search_attributes(firing.search_attributes(present))
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
        Err(WorkflowStartError::PayloadConversion(e)) => StartOutcome::RowRejected {
            error: format!("cannot encode workflow input: {e}"),
        },
        Err(WorkflowStartError::Rpc(status)) => classify(&status),
        Err(other) => StartOutcome::Unavailable {
            error: other.to_string(),
        },
    }
}

/// A row is failed only for what is provably about that row: the server's size limits on
/// its payload. Every other refusal (an invalid task queue or id prefix that validation at
/// start did not catch, a missing namespace, a permission) would fail every row in seconds,
/// so it keeps rows pending; anything else may be passing and is retried.
fn classify(status: &tonic::Status) -> StartOutcome {
    let error = format!("{:?}: {}", status.code(), status.message());
    let message = status.message().to_ascii_lowercase();
    // "Blob data size exceeds limit." (server), "received message larger than max" (gRPC);
    // not "TaskQueue length exceeds limit.", which is about configuration.
    let about_payload = ["blob", "size exceeds", "larger than max"]
        .iter()
        .any(|word| message.contains(word));
    match status.code() {
        Code::InvalidArgument | Code::ResourceExhausted if about_payload => {
            StartOutcome::RowRejected { error }
        }
        Code::InvalidArgument
        | Code::NotFound
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::FailedPrecondition => StartOutcome::Misconfigured { error },
        _ => StartOutcome::Unavailable { error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_payload_limits_fail_a_row() {
        for status in [
            tonic::Status::invalid_argument("Blob data size exceeds limit."),
            tonic::Status::resource_exhausted(
                "grpc: received message larger than max (5000000 vs. 4194304)",
            ),
        ] {
            assert!(
                matches!(classify(&status), StartOutcome::RowRejected { .. }),
                "{status:?}"
            );
        }
        for status in [
            tonic::Status::invalid_argument("TaskQueue length exceeds limit."),
            tonic::Status::not_found("namespace defualt not found"),
            tonic::Status::permission_denied("no"),
        ] {
            assert!(
                matches!(classify(&status), StartOutcome::Misconfigured { .. }),
                "{status:?}"
            );
        }
        for status in [
            tonic::Status::unavailable("down"),
            tonic::Status::deadline_exceeded("slow"),
            tonic::Status::resource_exhausted("namespace rate limit exceeded"),
        ] {
            assert!(
                matches!(classify(&status), StartOutcome::Unavailable { .. }),
                "{status:?}"
            );
        }
    }
}
