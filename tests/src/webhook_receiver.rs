//! A webhook receiver for tests: an HTTP server on 127.0.0.1 that records
//! every request (headers and raw body) and answers as told — a status,
//! or holding the request open, or not listening at all (stopped, then
//! started again on the same port). Signatures are checked in Rust
//! ([`Received::verify`]) and by the reference Standard Webhooks library
//! through python3 ([`verify_with_reference`]).

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use portico_control_plane::webhooks::signature::{self, SigningSecret};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    /// What the receiver answered (`None`: held open).
    pub answered: Option<u16>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_string()
    }

    /// Whether `secret` (`whsec_...`) made one of the signatures.
    pub fn verify(&self, secret: &str) -> bool {
        let Some(secret) = SigningSecret::parse(secret) else {
            return false;
        };
        let Ok(ts) = self.timestamp.parse::<i64>() else {
            return false;
        };
        signature::verify(&secret, &self.id, ts, &self.body, &self.signature)
    }
}

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Status(u16),
    /// Record the request, never answer (a slow receiver).
    Hold,
    /// Answer 307 with `Location: http://{addr}/` (a client that follows
    /// redirects would go there).
    Redirect(SocketAddr),
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    mode: Option<Mode>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    server: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listening on a free port, answering 200.
    pub async fn start() -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut r = Receiver {
            addr,
            shared: Arc::new(Mutex::new(Shared {
                received: Vec::new(),
                mode: Some(Mode::Status(200)),
            })),
            server: None,
        };
        r.serve(listener);
        Ok(r)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn serve(&mut self, listener: TcpListener) {
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(self.shared.clone());
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    pub fn set_mode(&self, mode: Mode) {
        lock(&self.shared).mode = Some(mode);
    }

    /// Stops listening: connections are refused until [`Receiver::restart`].
    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let listener = crate::eventually(10, "the receiver's port to be free again", || async {
            TcpListener::bind(self.addr).await.ok()
        })
        .await?;
        self.serve(listener);
        Ok(())
    }

    /// How many requests arrived (cheap: no copies).
    pub fn count(&self) -> usize {
        lock(&self.shared).received.len()
    }

    /// Whether a request whose body contains `needle` arrived.
    pub fn has_body_containing(&self, needle: &str) -> bool {
        lock(&self.shared)
            .received
            .iter()
            .rev()
            .any(|r| String::from_utf8_lossy(&r.body).contains(needle))
    }

    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared).received.clone()
    }

    /// Requests answered with a 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn receive(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mode = lock(&shared).mode.unwrap_or(Mode::Status(200));
    let answered = match mode {
        Mode::Status(s) => Some(s),
        Mode::Redirect(_) => Some(307),
        Mode::Hold => None,
    };
    lock(&shared).received.push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
        answered,
    });
    match mode {
        // A body over 1 KiB, to see it stored truncated.
        Mode::Status(s) => (
            StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "r".repeat(2000),
        )
            .into_response(),
        Mode::Redirect(to) => (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", format!("http://{to}/"))],
        )
            .into_response(),
        Mode::Hold => std::future::pending().await,
    }
}

/// Checks each request with the reference library (`standardwebhooks`
/// from PyPI, which `scripts/test` installs): `Webhook(secret).verify`.
/// Returns, per request, whether it verified.
pub fn verify_with_reference(secret: &str, requests: &[Received]) -> anyhow::Result<Vec<bool>> {
    let input: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id, "timestamp": r.timestamp, "signature": r.signature,
                "body": String::from_utf8_lossy(&r.body),
            })
        })
        .collect();
    let mut child = std::process::Command::new("python3")
        .args(["-c", REFERENCE_SCRIPT, secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("python3 is needed for the reference verification")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("python stdin")?;
        stdin.write_all(serde_json::to_string(&input)?.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "the reference verifier failed (python3 -m pip install standardwebhooks): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<bool> = serde_json::from_slice(&out.stdout)?;
    anyhow::ensure!(verdicts.len() == requests.len(), "one verdict per request");
    Ok(verdicts)
}

const REFERENCE_SCRIPT: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
wh = Webhook(sys.argv[1])
out = []
for r in json.load(sys.stdin):
    headers = {"webhook-id": r["id"], "webhook-timestamp": r["timestamp"], "webhook-signature": r["signature"]}
    try:
        wh.verify(r["body"], headers)
        out.append(True)
    except WebhookVerificationError:
        out.append(False)
print(json.dumps(out))
"#;

/// Settings for delivery tests: local http targets, a fast dispatcher and
/// a compressed retry schedule (attempts 200 ms apart).
pub const FAST_DELIVERY: &[(&str, &str)] = &[
    ("PORTICO_WEBHOOK_ALLOW_HTTP", "true"),
    ("PORTICO_WEBHOOK_ALLOW_PRIVATE", "true"),
    ("PORTICO_WEBHOOK_TICK_MS", "50"),
    (
        "PORTICO_WEBHOOK_RETRY_SCHEDULE",
        "0s,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms",
    ),
    ("PORTICO_WEBHOOK_TIMEOUT_MS", "5000"),
];

/// Creates an endpoint; returns (id, secret).
pub async fn create_endpoint(
    app: &crate::TestApp,
    key: &str,
    body: serde_json::Value,
) -> anyhow::Result<(String, String)> {
    let (status, e) = app
        .call(
            reqwest::Method::POST,
            "/v1/webhook-endpoints",
            key,
            Some(body),
        )
        .await?;
    anyhow::ensure!(status == 201, "endpoint create: {status} {e}");
    Ok((
        e["endpoint"]["id"].as_str().context("id")?.to_string(),
        e["secret"].as_str().context("secret")?.to_string(),
    ))
}

/// The messages of an endpoint (first page, up to 200).
pub async fn messages(
    app: &crate::TestApp,
    key: &str,
    endpoint: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let (status, page) = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/webhook-endpoints/{endpoint}/messages?limit=200"),
            key,
            None,
        )
        .await?;
    anyhow::ensure!(status == 200, "messages: {status} {page}");
    Ok(page["items"].as_array().cloned().unwrap_or_default())
}

/// The attempts of one message, oldest first.
pub async fn attempts(
    app: &crate::TestApp,
    key: &str,
    endpoint: &str,
    message: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let (status, page) = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/webhook-endpoints/{endpoint}/messages/{message}/attempts?limit=200"),
            key,
            None,
        )
        .await?;
    anyhow::ensure!(status == 200, "attempts: {status} {page}");
    Ok(page["items"].as_array().cloned().unwrap_or_default())
}
