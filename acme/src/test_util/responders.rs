//! What an edge does for ACME, in miniature: an HTTP-01 responder (a few
//! lines of HTTP/1.1 over tokio: this crate has no HTTP server) and
//! a TLS-ALPN-01 responder (tokio-rustls, ALPN `acme-tls/1`) serving whatever
//! a [`TestPublisher`] published, on ports the test hands to Pebble.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::{Context, HarnessError};
use crate::{Challenge, ChallengePublisher, PublishError};

/// Published answers, by token (HTTP-01) and by hostname (TLS-ALPN-01).
#[derive(Clone, Debug, Default)]
pub struct Answers {
    http: Arc<Mutex<HashMap<String, String>>>,
    tls: Arc<Mutex<HashMap<String, Arc<CertifiedKey>>>>,
}

/// A lock that survives a panicked holder: the maps stay usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Both responders, stopped on drop.
pub struct Responders {
    pub answers: Answers,
    pub http_port: u16,
    pub tls_port: u16,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Responders {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Responders {
    /// Binds both on free 127.0.0.1 ports and starts serving.
    pub async fn start() -> Result<Responders, HarnessError> {
        let answers = Answers::default();
        let http = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the HTTP-01 responder")?;
        let tls = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the TLS-ALPN-01 responder")?;
        let http_port = http.local_addr().context("its address")?.port();
        let tls_port = tls.local_addr().context("its address")?.port();
        let acceptor = tls_alpn_acceptor(answers.clone())?;
        let http_task = tokio::spawn(serve_http01(http, answers.clone()));
        let tls_task = tokio::spawn(serve_tls_alpn(tls, acceptor));
        Ok(Responders {
            answers,
            http_port,
            tls_port,
            tasks: vec![http_task, tls_task],
        })
    }
}

/// Answers `GET /.well-known/acme-challenge/{token}` with the key
/// authorization (200) or 404; one request per connection.
async fn serve_http01(listener: TcpListener, answers: Answers) {
    while let Ok((mut conn, _)) = listener.accept().await {
        let answers = answers.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head);
            let path = text.split_whitespace().nth(1).unwrap_or("");
            let found = path
                .strip_prefix("/.well-known/acme-challenge/")
                .and_then(|token| lock(&answers.http).get(token).cloned());
            let (status, body) = match found {
                Some(key_authorization) => ("200 OK", key_authorization),
                None => ("404 Not Found", String::new()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

#[derive(Debug)]
struct ByHostname(Answers);

impl ResolvesServerCert for ByHostname {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        lock(&self.0.tls).get(name).cloned()
    }
}

fn tls_alpn_acceptor(answers: Answers) -> Result<TlsAcceptor, HarnessError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ByHostname(answers)));
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn serve_tls_alpn(listener: TcpListener, acceptor: TlsAcceptor) {
    while let Ok((tcp, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.shutdown().await;
            }
        });
    }
}

/// Publishes into [`Answers`] (or, with `serve: false`, pretends to) and
/// counts calls, so tests can check that every answer is withdrawn.
pub struct TestPublisher {
    answers: Answers,
    serve: bool,
    pub published: AtomicUsize,
    pub withdrawn: AtomicUsize,
}

impl TestPublisher {
    pub fn new(answers: &Answers) -> TestPublisher {
        TestPublisher {
            answers: answers.clone(),
            serve: true,
            published: AtomicUsize::new(0),
            withdrawn: AtomicUsize::new(0),
        }
    }

    /// A publisher that says yes and serves nothing.
    pub fn silent(answers: &Answers) -> TestPublisher {
        TestPublisher {
            serve: false,
            ..TestPublisher::new(answers)
        }
    }

    pub fn counts(&self) -> (usize, usize) {
        (
            self.published.load(Ordering::SeqCst),
            self.withdrawn.load(Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl ChallengePublisher for TestPublisher {
    async fn publish(&self, answer: &Challenge) -> Result<(), PublishError> {
        self.published.fetch_add(1, Ordering::SeqCst);
        if !self.serve {
            return Ok(());
        }
        match answer {
            Challenge::Http01 {
                token,
                key_authorization,
                ..
            } => {
                lock(&self.answers.http).insert(token.clone(), key_authorization.clone());
            }
            Challenge::TlsAlpn01 {
                hostname,
                certificate_pem,
                key_pem,
            } => {
                let key = certified_key(certificate_pem, key_pem.expose())
                    .map_err(|e| PublishError::new(format!("loading the answer: {e}")))?;
                lock(&self.answers.tls).insert(hostname.clone(), Arc::new(key));
            }
        }
        Ok(())
    }

    async fn withdraw(&self, answer: &Challenge) {
        self.withdrawn.fetch_add(1, Ordering::SeqCst);
        match answer {
            Challenge::Http01 { token, .. } => {
                lock(&self.answers.http).remove(token);
            }
            Challenge::TlsAlpn01 { hostname, .. } => {
                lock(&self.answers.tls).remove(hostname);
            }
        }
    }
}

/// No `keys_match` check: webpki refuses the critical acmeIdentifier extension.
fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, String> {
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(vec![cert], signer))
}
