//! A TCP relay on a port bound now, forwarding to an address given later
//! (connections accepted before then wait for it). [`Relay::stall`] freezes
//! every connection open at that moment — bytes stop flowing both ways, the
//! sockets stay open — while new connections flow: an edge behind it keeps
//! a config stream that looks alive but delivers nothing, the way a stream
//! stuck behind a congested link does, and its new requests still pass.
//! [`Relay::with_prefix`] writes fixed bytes to the target before relaying
//! each connection, as Fly's proxy does with a PROXY protocol header.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Relay {
    pub addr: SocketAddr,
    target: watch::Sender<Option<SocketAddr>>,
    /// Connections accepted in a generation below this one are stalled.
    generation: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl Relay {
    pub async fn bind() -> anyhow::Result<Relay> {
        Self::with_prefix(Vec::new()).await
    }

    /// A relay that sends `prefix` to the target first on every connection.
    pub async fn with_prefix(prefix: Vec<u8>) -> anyhow::Result<Relay> {
        let prefix: Arc<[u8]> = prefix.into();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (target, target_rx) = watch::channel(None);
        let (generation, generation_rx) = watch::channel(0u64);
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let born = *generation_rx.borrow();
                tokio::spawn(relay(
                    inbound,
                    prefix.clone(),
                    target_rx.clone(),
                    generation_rx.clone(),
                    born,
                ));
            }
        });
        Ok(Relay {
            addr,
            target,
            generation,
            accept,
        })
    }

    pub fn forward_to(&self, target: SocketAddr) {
        self.target.send_replace(Some(target));
    }

    /// Freezes every connection open now; later ones flow.
    pub fn stall(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(
    inbound: TcpStream,
    prefix: Arc<[u8]>,
    mut target: watch::Receiver<Option<SocketAddr>>,
    generation: watch::Receiver<u64>,
    born: u64,
) {
    let Ok(addr) = target.wait_for(Option::is_some).await.map(|t| *t) else {
        return;
    };
    let Some(addr) = addr else { return };
    let Ok(mut outbound) = TcpStream::connect(addr).await else {
        return;
    };
    if outbound.write_all(&prefix).await.is_err() {
        return;
    }
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::join!(
        pump(in_read, out_write, generation.clone(), born),
        pump(out_read, in_write, generation, born),
    );
}

/// Copies `from` to `to` until either ends; once stalled, holds both open
/// and copies nothing more.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut generation: watch::Receiver<u64>,
    born: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => Some(read),
            stalled = generation.wait_for(|g| *g > born) => { drop(stalled); None }
        };
        let stalled = *generation.borrow() > born;
        let n = match read {
            _ if stalled => {
                // Keep the sockets (moved into this future) open forever.
                return std::future::pending().await;
            }
            None => continue,
            Some(Ok(0) | Err(_)) => return,
            Some(Ok(n)) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
