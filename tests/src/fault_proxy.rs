//! A fault-injecting ACME proxy: an HTTPS server on 127.0.0.1 (its own
//! throwaway CA, written to [`FaultProxy::ca_file`] for
//! `PORTICO_ACME_CA_FILE`) that the control plane uses as its ACME directory
//! and that forwards every request to a real Pebble over HTTPS, trusting
//! Pebble's TLS root. Pebble's absolute URLs in response bodies and in
//! `Location`/`Link` headers are rewritten to the proxy's, so the client
//! never talks to Pebble directly.
//!
//! Faults are queued with [`FaultProxy::fail_next`]: each of the next POSTs
//! (every ACME request after the directory and nonce fetches is a signed
//! POST), or with [`FaultProxy::fail_next_on`] the next ones whose path has
//! a given part (`finalize`, `chal`), is answered by the proxy instead of Pebble with the next fault,
//! the way a real CA answers: a 503 problem, a 429 `rateLimited` problem with
//! `Retry-After: 1`, or a 400 `badNonce` problem carrying a fresh
//! `Replay-Nonce` fetched from Pebble. When the queue is empty, everything is
//! forwarded untouched. What was injected is recorded for the test to read.
//!
//! With [`FaultProxy::start_with_ari`] it also plays a CA's ACME Renewal
//! Information (RFC 9773), which Pebble 2.4 lacks: the directory gains a
//! `renewalInfo` URL and `GET /renewal-info/{certID}` answers a suggested
//! window — one for every certificate, or one set for a given certificate
//! (an incident) — with `Retry-After: 1`. The payload of every new-order
//! POST is recorded, so a test can see the `replaces` a renewal sent.

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// What the proxy answers instead of forwarding one POST.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// 503 with a `serverInternal` problem document.
    Unavailable,
    /// 429 with `Retry-After: 1` and a `rateLimited` problem.
    RateLimited,
    /// 400 `badNonce` with a fresh `Replay-Nonce` from Pebble.
    BadNonce,
}

/// One injected fault: which, and the path of the POST it replaced.
#[derive(Clone, Debug)]
pub struct Injected {
    pub fault: Fault,
    pub path: String,
}

/// The running proxy; stops (and removes its CA file) on drop.
pub struct FaultProxy {
    pub addr: SocketAddr,
    /// The proxy's `/dir`, for `PORTICO_ACME_DIRECTORY`.
    pub directory_url: String,
    /// The root of the proxy's HTTPS certificate, for `PORTICO_ACME_CA_FILE`.
    pub ca_file: PathBuf,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    /// `https://127.0.0.1:<pebble>`, as Pebble writes its URLs.
    upstream: String,
    /// `https://127.0.0.1:<proxy>`.
    origin: String,
    /// `127.0.0.1:<proxy>`, the `Host` Pebble is sent.
    authority: String,
    /// Pebble's `newNonce` URL.
    new_nonce: String,
    /// The path of Pebble's `newOrder` URL.
    new_order_path: String,
    client: reqwest::Client,
    plan: Mutex<Plan>,
}

#[derive(Default)]
struct Plan {
    /// Faults not injected yet, each with the path part it waits for.
    queued: VecDeque<(Fault, Option<String>)>,
    injected: Vec<Injected>,
    forwarded: usize,
    /// ARI: the window for every certificate, if ARI is on.
    ari_default: Option<Window>,
    /// ARI: windows for given certificate ids.
    ari_windows: std::collections::HashMap<String, Window>,
    /// ARI: every certificate id asked about, in order.
    ari_asked: Vec<String>,
    /// Decoded payloads of the new-order POSTs.
    new_orders: Vec<serde_json::Value>,
    /// ARI: leave `replaces` out of created orders, as a CA breaking
    /// RFC 9773 would.
    drop_replaces: bool,
}

/// A suggested renewal window.
pub type Window = (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>);

impl FaultProxy {
    /// Starts a proxy for the Pebble whose directory is `upstream_directory`
    /// and whose HTTPS certificate chains to `upstream_root_pem`.
    pub async fn start(upstream_directory: &str, upstream_root_pem: &str) -> anyhow::Result<Self> {
        Self::start_with_ari(upstream_directory, upstream_root_pem, None).await
    }

    /// Like [`start`](Self::start), with ARI on when `ari` gives the
    /// window every certificate gets.
    pub async fn start_with_ari(
        upstream_directory: &str,
        upstream_root_pem: &str,
        ari: Option<Window>,
    ) -> anyhow::Result<Self> {
        crate::edge::install_crypto();
        let upstream = origin_of(upstream_directory)?;
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(
                upstream_root_pem.as_bytes(),
            )?])
            // HTTP/1 so that the `Host` we set is the one Pebble sees.
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()?;
        let directory: serde_json::Value = client
            .get(upstream_directory)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let new_nonce = directory["newNonce"]
            .as_str()
            .context("Pebble's directory has no newNonce")?
            .to_string();
        let new_order_path = directory["newOrder"]
            .as_str()
            .and_then(|url| url.strip_prefix(&upstream))
            .context("Pebble's directory has no newOrder")?
            .to_string();

        let (root_pem, tls) = tls_acceptor()?;
        let ca_file = std::env::temp_dir().join(format!(
            "portico-fault-proxy-{}.pem",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::write(&ca_file, root_pem)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let origin = format!("https://{addr}");
        let shared = Arc::new(Shared {
            upstream,
            origin: origin.clone(),
            authority: addr.to_string(),
            new_nonce,
            new_order_path,
            client,
            plan: Mutex::new(Plan {
                ari_default: ari,
                ..Plan::default()
            }),
        });
        let (handshaken, incoming) = mpsc::channel(64);
        let accept = tokio::spawn(accept_tls(listener, tls, handshaken));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let serve = tokio::spawn(async move {
            let _ = axum::serve(TlsListener { addr, incoming }, app).await;
        });
        Ok(FaultProxy {
            addr,
            directory_url: format!("{origin}/dir"),
            ca_file,
            shared,
            tasks: vec![accept, serve],
        })
    }

    /// Queues faults: each of the next POSTs gets the next one.
    pub fn fail_next(&self, faults: &[Fault]) {
        self.plan().queued.extend(faults.iter().map(|f| (*f, None)));
    }

    /// Queues faults for the next POSTs whose path contains `path_part`.
    pub fn fail_next_on(&self, path_part: &str, faults: &[Fault]) {
        let part = Some(path_part.to_string());
        self.plan()
            .queued
            .extend(faults.iter().map(|f| (*f, part.clone())));
    }

    /// Faults queued and not yet injected.
    pub fn pending(&self) -> usize {
        self.plan().queued.len()
    }

    /// The faults injected so far, in order.
    pub fn injected(&self) -> Vec<Injected> {
        self.plan().injected.clone()
    }

    /// Requests forwarded to Pebble so far.
    pub fn forwarded(&self) -> usize {
        self.plan().forwarded
    }

    /// ARI: answer `window` for the certificate `cert_id` from now on.
    pub fn set_ari_window(&self, cert_id: &str, window: Window) {
        self.plan().ari_windows.insert(cert_id.to_string(), window);
    }

    /// ARI: stop reflecting `replaces` in created orders.
    pub fn drop_replaces(&self) {
        self.plan().drop_replaces = true;
    }

    /// ARI: the certificate ids asked about so far, in order.
    pub fn ari_asked(&self) -> Vec<String> {
        self.plan().ari_asked.clone()
    }

    /// The payloads of the new-order POSTs so far, in order.
    pub fn new_orders(&self) -> Vec<serde_json::Value> {
        self.plan().new_orders.clone()
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.shared.plan()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

impl Shared {
    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        // A panic while holding this lock is a failed test already.
        self.plan
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the next fault for a request, if it is a POST and one is queued.
    fn take_fault(&self, method: &axum::http::Method, path: &str) -> Option<Fault> {
        let mut plan = self.plan();
        if method != axum::http::Method::POST {
            plan.forwarded += 1;
            return None;
        }
        let due = plan
            .queued
            .iter()
            .position(|(_, part)| part.as_deref().is_none_or(|part| path.contains(part)));
        match due.and_then(|i| plan.queued.remove(i)) {
            Some((fault, _)) => {
                plan.injected.push(Injected {
                    fault,
                    path: path.to_string(),
                });
                Some(fault)
            }
            None => {
                plan.forwarded += 1;
                None
            }
        }
    }

    fn rewrite(&self, text: &str) -> String {
        text.replace(&self.upstream, &self.origin)
    }
}

/// Every request: ARI, a fault, or Pebble's answer with its URLs rewritten.
async fn answer(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    if let Some(cert_id) = path.strip_prefix("/renewal-info/") {
        return renewal_info(&shared, cert_id);
    }
    let result = match shared.take_fault(request.method(), &path) {
        Some(fault) => inject(&shared, fault).await,
        None => forward(&shared, request, &path).await,
    };
    result.unwrap_or_else(|e| {
        problem(
            StatusCode::BAD_GATEWAY,
            "serverInternal",
            &format!("fault proxy: {e:#}"),
        )
    })
}

async fn inject(shared: &Shared, fault: Fault) -> anyhow::Result<Response> {
    Ok(match fault {
        Fault::Unavailable => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "serverInternal",
            "injected: the CA is unavailable",
        ),
        Fault::RateLimited => {
            let mut resp = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "rateLimited",
                "injected: too many requests",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
        Fault::BadNonce => {
            let nonce = shared.client.head(&shared.new_nonce).send().await?;
            let nonce = nonce
                .headers()
                .get("replay-nonce")
                .cloned()
                .context("Pebble sent no Replay-Nonce")?;
            let mut resp = problem(
                StatusCode::BAD_REQUEST,
                "badNonce",
                "injected: JWS has an invalid anti-replay nonce",
            );
            resp.headers_mut().insert("replay-nonce", nonce);
            resp
        }
    })
}

/// Forwards to Pebble. `Host` stays the proxy's: Pebble checks a JWS's
/// `url` against the URL it was sent to (built from `Host`), and the client
/// signed the proxy's URL.
async fn forward(shared: &Shared, request: Request, path: &str) -> anyhow::Result<Response> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await?;
    let replaces = if path == shared.new_order_path {
        let payload = jws_payload(&body).unwrap_or(serde_json::Value::Null);
        let replaces = payload.get("replaces").cloned();
        shared.plan().new_orders.push(payload);
        replaces
    } else {
        None
    };
    let mut outbound = shared
        .client
        .request(parts.method, format!("{}{path}", shared.upstream))
        .header(header::HOST, shared.authority.as_str())
        .body(body);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH && !is_hop_by_hop(name) {
            outbound = outbound.header(name, value);
        }
    }
    let upstream = outbound.send().await?;
    let status = upstream.status();
    let headers = rewrite_headers(shared, upstream.headers())?;
    let bytes = upstream.bytes().await?;
    let body = match std::str::from_utf8(&bytes) {
        Ok(text) if path == "/dir" && shared.plan().ari_default.is_some() => {
            let mut directory: serde_json::Value = serde_json::from_str(&shared.rewrite(text))?;
            directory["renewalInfo"] = json!(format!("{}/renewal-info", shared.origin));
            Body::from(directory.to_string())
        }
        // A CA with ARI echoes `replaces` in the order it creates.
        Ok(text) if replaces.is_some() && status.is_success() && !shared.plan().drop_replaces => {
            let mut order: serde_json::Value = serde_json::from_str(&shared.rewrite(text))?;
            order["replaces"] = replaces.unwrap_or_default();
            Body::from(order.to_string())
        }
        Ok(text) => Body::from(shared.rewrite(text)),
        Err(_) => Body::from(bytes),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// `GET /renewal-info/{certID}`: the certificate's window, or the default.
fn renewal_info(shared: &Shared, cert_id: &str) -> Response {
    let window = {
        let mut plan = shared.plan();
        plan.ari_asked.push(cert_id.to_string());
        plan.ari_windows.get(cert_id).copied().or(plan.ari_default)
    };
    let Some((start, end)) = window else {
        return problem(StatusCode::NOT_FOUND, "malformed", "ARI is off");
    };
    let body = json!({
        "suggestedWindow": {"start": start.to_rfc3339(), "end": end.to_rfc3339()},
    });
    let mut resp = Response::new(Body::from(body.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// The decoded payload of a flattened JWS request body.
fn jws_payload(body: &[u8]) -> Option<serde_json::Value> {
    use base64::Engine;
    let jws: serde_json::Value = serde_json::from_slice(body).ok()?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jws["payload"].as_str()?)
        .ok()?;
    serde_json::from_slice(&payload).ok()
}

fn rewrite_headers(shared: &Shared, upstream: &HeaderMap) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for (name, value) in upstream {
        if name == header::CONTENT_LENGTH || is_hop_by_hop(name) {
            continue;
        }
        let value = if name == header::LOCATION || name == header::LINK {
            HeaderValue::from_str(&shared.rewrite(value.to_str()?))?
        } else {
            value.clone()
        };
        headers.append(name, value);
    }
    Ok(headers)
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::HOST
        || name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == "keep-alive"
}

/// An RFC 8555 problem document response.
fn problem(status: StatusCode, kind: &str, detail: &str) -> Response {
    let body = json!({
        "type": format!("urn:ietf:params:acme:error:{kind}"),
        "detail": detail,
        "status": status.as_u16(),
    });
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

/// `https://host:port` of a URL.
fn origin_of(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("https://")
        .context("the upstream directory is not https")?;
    let host = rest.split('/').next().unwrap_or(rest);
    Ok(format!("https://{host}"))
}

/// A throwaway root and a leaf for 127.0.0.1 signed by it: (root PEM, acceptor).
fn tls_acceptor() -> anyhow::Result<(String, TlsAcceptor)> {
    let root_key = KeyPair::generate()?;
    let mut root = CertificateParams::new(Vec::<String>::new())?;
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root_cert = root.self_signed(&root_key)?;
    let issuer = Issuer::new(root, root_key);
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])?.signed_by(&key, &issuer)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())?,
        )?;
    Ok((root_cert.pem(), TlsAcceptor::from(Arc::new(config))))
}

/// Accepts TCP and runs each TLS handshake in its own task, so a slow
/// client does not hold up the others.
async fn accept_tls(
    listener: TcpListener,
    tls: TlsAcceptor,
    handshaken: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    while let Ok((tcp, peer)) = listener.accept().await {
        let (tls, handshaken) = (tls.clone(), handshaken.clone());
        tokio::spawn(async move {
            let accepted = tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await;
            if let Ok(Ok(stream)) = accepted {
                let _ = handshaken.send((stream, peer)).await;
            }
        });
    }
}

/// Handshaken connections, for `axum::serve`.
struct TlsListener {
    addr: SocketAddr,
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(conn) => conn,
            // The accept task is gone (the proxy is dropping): wait forever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
