//! A tiny fake control plane for the config client's tests: a tokio
//! listener on 127.0.0.1:0 speaking just enough HTTP/1.1 (one request per
//! connection, `Connection: close`). Config stream requests take the next
//! scripted answer (401, a status, or an NDJSON body the test feeds line by
//! line); heartbeats are decoded and kept. Optionally over TLS.

#![allow(dead_code)]

use anyhow::Context;
use portico_protocol::{Frame, Heartbeat, encode_frame};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub const TOKEN: &str = "pte_test_token";

/// What the next config stream request gets.
pub enum Script {
    Unauthorized,
    Status(u16),
    /// 200 with the lines sent on the channel; the body ends when the
    /// sender is dropped.
    Stream(mpsc::UnboundedReceiver<Vec<u8>>),
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    config_requests: Vec<Seen>,
    heartbeats: Vec<Heartbeat>,
    scripts: VecDeque<Script>,
}

pub struct FakeControlPlane {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: tokio::task::JoinHandle<()>,
}

/// Feeds one scripted config stream.
pub struct StreamFeed(mpsc::UnboundedSender<Vec<u8>>);

impl StreamFeed {
    pub fn frame(&self, frame: &Frame) -> anyhow::Result<()> {
        self.raw(encode_frame(frame)?)
    }

    pub fn raw(&self, bytes: impl Into<Vec<u8>>) -> anyhow::Result<()> {
        self.0
            .send(bytes.into())
            .map_err(|_| anyhow::anyhow!("the stream's connection is gone"))
    }
}

impl FakeControlPlane {
    /// Plain HTTP.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(None).await
    }

    /// HTTPS with this server config when `tls` is set.
    pub async fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let state = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(config) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(config);
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = serve(stream, state).await;
                            }
                        }
                        None => {
                            let _ = serve(tcp, state).await;
                        }
                    }
                });
            }
        });
        Ok(FakeControlPlane {
            addr,
            state,
            accept,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues an answer for a later config request.
    pub fn script(&self, script: Script) {
        self.lock().scripts.push_back(script);
    }

    /// Queues a 200 stream and returns its feed.
    pub fn stream(&self) -> StreamFeed {
        let (tx, rx) = mpsc::unbounded_channel();
        self.script(Script::Stream(rx));
        StreamFeed(tx)
    }

    pub fn config_requests(&self) -> Vec<Seen> {
        self.lock().config_requests.clone()
    }

    pub fn heartbeats(&self) -> Vec<Heartbeat> {
        self.lock().heartbeats.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for FakeControlPlane {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    state: Arc<Mutex<State>>,
) -> anyhow::Result<()> {
    let (seen, body_start) = read_head(&mut s).await?;
    let authorised =
        seen.headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {TOKEN}"));
    let path = seen.target.split('?').next().unwrap_or_default().to_owned();
    let lock = || {
        state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    match (seen.method.as_str(), path.as_str()) {
        ("GET", "/internal/v1/edge/config") => {
            let script = {
                let mut st = lock();
                st.config_requests.push(seen);
                st.scripts.pop_front()
            };
            match (authorised, script) {
                (false, _) | (true, Some(Script::Unauthorized)) => respond(&mut s, 401).await,
                (true, Some(Script::Status(code))) => respond(&mut s, code).await,
                (true, None) => respond(&mut s, 503).await,
                (true, Some(Script::Stream(rx))) => stream(&mut s, rx).await,
            }
        }
        ("POST", "/internal/v1/edge/heartbeat") => {
            let len: usize = seen
                .headers
                .get("content-length")
                .context("heartbeat without content-length")?
                .parse()?;
            let mut body = body_start;
            while body.len() < len {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await?;
                anyhow::ensure!(n > 0, "heartbeat body cut short");
                body.extend_from_slice(&buf[..n]);
            }
            if !authorised {
                return respond(&mut s, 401).await;
            }
            let heartbeat: Heartbeat = serde_json::from_slice(&body)?;
            lock().heartbeats.push(heartbeat);
            respond(&mut s, 204).await
        }
        _ => respond(&mut s, 404).await,
    }
}

/// Reads the request head; returns it and any body bytes read with it.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> anyhow::Result<(Seen, Vec<u8>)> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        anyhow::ensure!(buf.len() < 64 * 1024, "request head too large");
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed before the head ended");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..end].to_vec())?;
    let mut lines = head.split("\r\n");
    let mut request = lines.next().context("no request line")?.split(' ');
    let method = request.next().context("no method")?.to_owned();
    let target = request.next().context("no target")?.to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let seen = Seen {
        method,
        target,
        headers,
    };
    Ok((seen, buf[end + 4..].to_vec()))
}

async fn respond<S: AsyncWrite + Unpin>(s: &mut S, status: u16) -> anyhow::Result<()> {
    let head = format!("HTTP/1.1 {status} Fake\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await?;
    s.shutdown().await?;
    Ok(())
}

async fn stream<S: AsyncWrite + Unpin>(
    s: &mut S,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) -> anyhow::Result<()> {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n";
    s.write_all(head.as_bytes()).await?;
    s.flush().await?;
    while let Some(bytes) = rx.recv().await {
        s.write_all(&bytes).await?;
        s.flush().await?;
    }
    s.shutdown().await?;
    Ok(())
}

/// Polls `check` until it returns `Some`, for at most 20 s.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = check() {
            return Ok(found);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await; // allow-sleep: polling with a deadline
    }
}
