//! The LISTEN side of "LISTEN/NOTIFY for latency, polling for safety" (guarantees §4.1).
//!
//! One dedicated connection (LISTEN cannot go through a pool or PgBouncer in transaction
//! mode). Notifications carry no data; each only wakes the relay, and a burst of them
//! coalesces into one wake-up. After every (re)connect the relay is woken at once, because
//! notifications sent while the connection was down are lost.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::db::{NOTIFY_CHANNEL, PgTarget, pg_detail};
use crate::metrics::{Metrics, WakeSource};

/// `liveness`: how often the idle LISTEN connection proves it is alive (a half-open TCP
/// connection would otherwise swallow notifications until the kernel notices); a check that
/// takes longer than that drops the connection.
pub async fn run(
    pg: PgTarget,
    liveness: Duration,
    wake: mpsc::Sender<WakeSource>,
    metrics: Metrics,
    mut backoff: Backoff,
    cancel: CancellationToken,
) {
    loop {
        let lost = tokio::select! {
            _ = cancel.cancelled() => return,
            lost = listen_once(&pg, liveness, &wake, &metrics, &mut backoff, &cancel) => lost,
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
    pg: &PgTarget,
    liveness_period: Duration,
    wake: &mpsc::Sender<WakeSource>,
    metrics: &Metrics,
    backoff: &mut Backoff,
    cancel: &CancellationToken,
) -> String {
    let bound = pg
        .config
        .get_connect_timeout()
        .copied()
        .unwrap_or(liveness_period);
    let connect = async {
        match tokio::time::timeout(bound, pg.config.connect(pg.tls.clone())).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(err)) => Err(format!(
                "cannot connect to {}: {}",
                pg.describe(),
                pg_detail(&err)
            )),
            Err(_) => Err(format!("cannot connect to {}: timed out", pg.describe())),
        }
    };
    let (client, mut connection) = match metrics.postgres("listen", connect).await {
        Ok(pair) => pair,
        Err(reason) => return reason,
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
                Err(err) => return pg_detail(&err),
            }
        }
        "connection closed by the server".to_owned()
    });
    let statement = format!("LISTEN {NOTIFY_CHANNEL}");
    let listen = tokio::time::timeout(liveness_period, client.batch_execute(&statement));
    match listen.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            driver.abort();
            return format!("LISTEN failed: {}", pg_detail(&err));
        }
        Err(_) => {
            driver.abort();
            return "LISTEN timed out".to_owned();
        }
    }
    metrics.listener_connected.set(1);
    backoff.reset();
    tracing::info!(
        channel = NOTIFY_CHANNEL,
        "listening for outbox notifications"
    );
    // Whatever was committed while we were not listening is found by an immediate drain.
    let _ = wake.try_send(WakeSource::Reconnect);

    let mut liveness = tokio::time::interval(liveness_period);
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
                let check = tokio::time::timeout(liveness_period, client.simple_query("SELECT 1"));
                match check.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => break format!("liveness check failed: {}", pg_detail(&err)),
                    Err(_) => break "liveness check timed out".to_owned(),
                }
            }
        }
    };
    drop(client);
    if reason == "connection ended" {
        // The driver has ended (or is ending) by itself: its reason is the better one.
        return match driver.await {
            Ok(driver_reason) => driver_reason,
            Err(_) => reason,
        };
    }
    // A failed liveness check or shutdown: the socket may be half-open, and the driver
    // would wait for TCP to give up (minutes). Drop it now; the socket closes with it.
    driver.abort();
    reason
}
