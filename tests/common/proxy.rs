//! A TCP proxy of the test's own between the daemon and PostgreSQL, with a switch that
//! turns it into a black hole: a network path that silently drops everything.
//!
//! While blackholed, no byte is copied in either direction, yet every socket stays open:
//! neither side sees a FIN or a reset, and the kernels keep acknowledging (so TCP
//! keepalives see a live peer). A client only notices by a timeout of its own. Connections
//! opened meanwhile are accepted and left silent too. Bytes read just before the switch
//! are held and delivered on resume, like a path that comes back before TCP gives up.
//!
//! The proxy runs on the test's tokio runtime; dropping it closes everything.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub struct BlackholeProxy {
    pub port: u16,
    flowing: Arc<watch::Sender<bool>>,
    accept: JoinHandle<()>,
}

impl BlackholeProxy {
    /// Listens on 127.0.0.1:<free port> and forwards each connection to `upstream`.
    pub async fn start(upstream: &str) -> BlackholeProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (flowing, _) = watch::channel(true);
        let flowing = Arc::new(flowing);
        let upstream = upstream.to_owned();
        let switch = flowing.clone();
        let accept = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection's task.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        connections.spawn(relay(client, upstream.clone(), switch.subscribe()));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        BlackholeProxy {
            port,
            flowing,
            accept,
        }
    }

    /// `127.0.0.1:<port>`, for [`super::TestDb::url_via`].
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops copying bytes, in both directions, on every connection, old and new.
    pub fn blackhole(&self) {
        self.flowing.send_replace(false);
    }

    /// Copies bytes again (held ones first).
    pub fn resume(&self) {
        self.flowing.send_replace(true);
    }
}

impl Drop for BlackholeProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One proxied connection: connects upstream once the path is open, then copies both
/// ways until either side closes or fails.
async fn relay(client: TcpStream, upstream: String, mut flowing: watch::Receiver<bool>) {
    if flowing.wait_for(|open| *open).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return; // the client sees its connection closed, as with a refused one
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let _ = tokio::try_join!(
        copy(client_read, server_write, flowing.clone()),
        copy(server_read, client_write, flowing),
    );
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut flowing: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_open(&mut flowing).await?;
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        // Blackholed while reading: hold the bytes until the path is open again.
        wait_open(&mut flowing).await?;
        to.write_all(&buf[..n]).await?;
    }
}

async fn wait_open(flowing: &mut watch::Receiver<bool>) -> std::io::Result<()> {
    flowing
        .wait_for(|open| *open)
        .await
        .map(|_| ())
        .map_err(|_| std::io::Error::other("proxy stopped"))
}
