//! What an edge does for ACME, in miniature: an HTTP-01 responder (axum) and
//! a TLS-ALPN-01 responder (tokio-rustls, ALPN `acme-tls/1`) serving whatever
//! a [`TestPublisher`] published, on ports the test hands to Pebble.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use portico_acme::{Challenge, ChallengePublisher, PublishError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Published answers, by token (HTTP-01) and by hostname (TLS-ALPN-01).
#[derive(Clone, Debug, Default)]
pub struct Answers {
    http: Arc<Mutex<HashMap<String, String>>>,
    tls: Arc<Mutex<HashMap<String, Arc<CertifiedKey>>>>,
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
    pub async fn start() -> Responders {
        let answers = Answers::default();
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let tls = TcpListener::bind("127.0.0.1:0").await.expect("bind tls");
        let http_port = http.local_addr().expect("addr").port();
        let tls_port = tls.local_addr().expect("addr").port();
        let router = Router::new()
            .route("/.well-known/acme-challenge/{token}", get(http01))
            .with_state(answers.clone());
        let http_task = tokio::spawn(async move {
            let _ = axum::serve(http, router).await;
        });
        let tls_task = tokio::spawn(serve_tls_alpn(tls, answers.clone()));
        Responders {
            answers,
            http_port,
            tls_port,
            tasks: vec![http_task, tls_task],
        }
    }
}

async fn http01(State(answers): State<Answers>, Path(token): Path<String>) -> (StatusCode, String) {
    let found = answers.http.lock().expect("lock").get(&token).cloned();
    match found {
        Some(key_authorization) => (StatusCode::OK, key_authorization),
        None => (StatusCode::NOT_FOUND, String::new()),
    }
}

#[derive(Debug)]
struct ByHostname(Answers);

impl ResolvesServerCert for ByHostname {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        self.0.tls.lock().ok()?.get(name).cloned()
    }
}

async fn serve_tls_alpn(listener: TcpListener, answers: Answers) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ByHostname(answers)));
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
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
                let mut http = self.answers.http.lock().expect("lock");
                http.insert(token.clone(), key_authorization.clone());
            }
            Challenge::TlsAlpn01 {
                hostname,
                certificate_pem,
                key_pem,
            } => {
                let key = certified_key(certificate_pem, key_pem.expose())
                    .map_err(|e| PublishError::new(format!("loading the answer: {e}")))?;
                let mut tls = self.answers.tls.lock().expect("lock");
                tls.insert(hostname.clone(), Arc::new(key));
            }
        }
        Ok(())
    }

    async fn withdraw(&self, answer: &Challenge) {
        self.withdrawn.fetch_add(1, Ordering::SeqCst);
        match answer {
            Challenge::Http01 { token, .. } => {
                self.answers.http.lock().expect("lock").remove(token);
            }
            Challenge::TlsAlpn01 { hostname, .. } => {
                self.answers.tls.lock().expect("lock").remove(hostname);
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
