//! The LISTEN side of "LISTEN/NOTIFY for latency, polling for safety" (SPEC §4.1).
//!
//! One dedicated connection (LISTEN cannot go through a pool or PgBouncer in transaction
//! mode). Notifications carry no data; each only wakes the relay, and a burst of them
//! coalesces into one wake-up. After every (re)connect the relay is woken at once, because
//! notifications sent while the connection was down are lost.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::db::NOTIFY_CHANNEL;
use crate::metrics::{Metrics, WakeSource};

/// How often the idle LISTEN connection proves it is alive; a half-open TCP connection would
/// otherwise swallow notifications until keepalives notice.
const LIVENESS_CHECK: Duration = Duration::from_secs(15);

pub async fn run(
    pg: tokio_postgres::Config,
    wake: mpsc::Sender<WakeSource>,
    metrics: Metrics,
    mut backoff: Backoff,
    cancel: CancellationToken,
) {
    loop {
        let lost = tokio::select! {
            _ = cancel.cancelled() => return,
            lost = listen_once(&pg, &wake, &metrics, &mut backoff, &cancel) => lost,
        };
        metrics.listener_connected.set(0);
        if cancel.is_cancelled() {
            return;
        }
        let delay = backoff.next_delay();
        tracing::warn!(error = %lost, retry_in = ?delay, "LISTEN connection lost; polling carries on");
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Connects, listens and forwards notifications until the connection fails; returns why.
async fn listen_once(
    pg: &tokio_postgres::Config,
    wake: &mpsc::Sender<WakeSource>,
    metrics: &Metrics,
    backoff: &mut Backoff,
    cancel: &CancellationToken,
) -> String {
    let (client, mut connection) = match metrics.postgres("listen", pg.connect(NoTls)).await {
        Ok(pair) => pair,
        Err(err) => return format!("cannot connect: {err}"),
    };
    // The connection object yields notifications and must be polled for the client to work.
    let (note_tx, mut note_rx) = mpsc::unbounded_channel::<()>();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if note_tx.send(()).is_err() {
                        return "listener stopped".to_owned();
                    }
                }
                Ok(_) => {}
                Err(err) => return err.to_string(),
            }
        }
        "connection closed by the server".to_owned()
    });
    if let Err(err) = client
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .await
    {
        driver.abort();
        return format!("LISTEN failed: {err}");
    }
    metrics.listener_connected.set(1);
    backoff.reset();
    tracing::info!(
        channel = NOTIFY_CHANNEL,
        "listening for outbox notifications"
    );
    // Whatever was committed while we were not listening is found by an immediate drain.
    let _ = wake.try_send(WakeSource::Reconnect);

    let mut liveness = tokio::time::interval(LIVENESS_CHECK);
    liveness.tick().await;
    let reason = loop {
        tokio::select! {
            _ = cancel.cancelled() => break "shutting down".to_owned(),
            note = note_rx.recv() => match note {
                // A full channel means a wake-up is already pending: the burst coalesces.
                Some(()) => { let _ = wake.try_send(WakeSource::Notify); }
                None => break "connection ended".to_owned(),
            },
            _ = liveness.tick() => {
                let check = tokio::time::timeout(LIVENESS_CHECK, client.simple_query("SELECT 1"));
                match check.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => break format!("liveness check failed: {err}"),
                    Err(_) => break "liveness check timed out".to_owned(),
                }
            }
        }
    };
    drop(client);
    match driver.await {
        Ok(driver_reason) if reason == "connection ended" => driver_reason,
        _ => reason,
    }
}
