//! TLS by SNI. [`CertResolver`] is rustls's certificate choice: one lookup in
//! the current table (exact, wildcard, then the default certificate).
//! [`Gate`] runs before the handshake (pingora's pre-TLS hook): it peeks the
//! ClientHello, answers TLS-ALPN-01 challenges itself, and for a known host
//! that allows on-demand TLS but has no certificate yet, waits (bounded) for
//! one through [`crate::on_demand::OnDemand`]. It never asks anything for a
//! host it already has a certificate for, nor for unknown hosts.

use crate::challenge_fetch::ChallengeFetch;
use crate::on_demand::OnDemand;
use crate::state::Edge;
use crate::table::HostKnowledge;
use crate::traffic::{self, Event, EventKind};
use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::TlsRef;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// A ClientHello larger than this is treated as malformed.
const MAX_HELLO_BYTES: usize = 64 * 1024;
const HELLO_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct CertResolver {
    pub edge: Arc<Edge>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertResolver")
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.edge.table();
        hello
            .server_name()
            .and_then(|sni| table.certificate(sni))
            .or_else(|| table.default_certificate())
    }
}

/// The SNI of a finished handshake, attached to the connection's TLS digest
/// so request hooks can compare it with the `Host` header.
pub struct Sni(pub String);

pub struct HandshakeCallbacks;

#[async_trait]
impl TlsAccept for HandshakeCallbacks {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        tls.server_name()
            .map(|s| Arc::new(Sni(s.to_ascii_lowercase())) as Arc<dyn Any + Send + Sync>)
    }
}

pub struct Gate {
    pub edge: Arc<Edge>,
    pub on_demand: Arc<OnDemand>,
    /// TLS-ALPN-01 answers the table lacks, from the control plane.
    pub challenges: Arc<ChallengeFetch>,
}

/// What the peek found.
enum Hello {
    Parsed { sni: Option<String>, acme: bool },
    Malformed,
}

#[async_trait]
impl pingora::listeners::PreTlsProcess for Gate {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let (hello, bytes) = peek_client_hello(stream).await;
        stream.rewind(&bytes);
        let outcome = match hello {
            Hello::Malformed => "malformed",
            Hello::Parsed { sni: None, .. } => "no_sni",
            Hello::Parsed {
                sni: Some(sni),
                acme: true,
            } => {
                self.edge
                    .metrics
                    .handshakes
                    .with_label_values(&["acme_tls_alpn"])
                    .inc();
                answer_tls_alpn(&self.edge, &self.challenges, &sni, stream).await;
                // The validator only needed the handshake; this connection is done.
                return pingora::Error::e_explain(
                    pingora::ErrorType::HandshakeError,
                    "TLS-ALPN-01 answered",
                );
            }
            Hello::Parsed {
                sni: Some(sni),
                acme: false,
            } => match self.edge.table().knows(&sni) {
                HostKnowledge::HasCertificate => "known",
                HostKnowledge::OnDemand => {
                    self.on_demand.ensure(&self.edge, &sni).await;
                    self.count_if_no_certificate(&sni);
                    "on_demand"
                }
                HostKnowledge::KnownNoCertificate => {
                    self.count_if_no_certificate(&sni);
                    "known_no_certificate"
                }
                HostKnowledge::Unknown => "unknown",
            },
        };
        self.edge
            .metrics
            .handshakes
            .with_label_values(&[outcome])
            .inc();
        Ok(())
    }
}

impl Gate {
    /// A handshake for a configured host the edge has no certificate for
    /// (none configured, or on-demand issuance did not deliver one in
    /// time) cannot succeed: the default certificate, if any, does not
    /// name the host. Counted in the host's traffic window (best effort:
    /// handshakes that fail later, e.g. a client refusing the certificate
    /// or a protocol error, are not seen here).
    fn count_if_no_certificate(&self, sni: &str) {
        let table = self.edge.table();
        if table.certificate(sni).is_some() {
            return;
        }
        if let Some(route) = table.route(sni).route() {
            let event = Event {
                route: route.clone(),
                at_unix: traffic::unix_now(),
                kind: EventKind::TlsHandshakeFailure,
            };
            self.edge.traffic.record(event, &self.edge.metrics);
        }
    }
}

/// Reads until rustls has a whole ClientHello (or gives up), returning what
/// it found and every byte read, which the caller puts back on the stream.
async fn peek_client_hello(stream: &mut L4Stream) -> (Hello, Vec<u8>) {
    let mut acceptor = Acceptor::default();
    let mut bytes = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Hello::Malformed,
                Ok(n) => n,
            };
            bytes.extend_from_slice(&chunk[..n]);
            if bytes.len() > MAX_HELLO_BYTES || acceptor.read_tls(&mut &chunk[..n]).is_err() {
                return Hello::Malformed;
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    let hello = accepted.client_hello();
                    let acme = hello
                        .alpn()
                        .is_some_and(|mut p| p.any(|p| p == ACME_TLS_ALPN));
                    return Hello::Parsed {
                        sni: hello.server_name().map(str::to_ascii_lowercase),
                        acme,
                    };
                }
                Ok(None) => continue,
                Err(_) => return Hello::Malformed,
            }
        }
    };
    let hello = tokio::time::timeout(HELLO_READ_TIMEOUT, read)
        .await
        .unwrap_or(Hello::Malformed);
    (hello, bytes)
}

/// Completes an `acme-tls/1` handshake with the challenge certificate for
/// `sni`: the table's, or for a host the table knows, the control plane's
/// (the config stream may lag); otherwise lets the connection fail.
async fn answer_tls_alpn(
    edge: &Edge,
    challenges: &ChallengeFetch,
    sni: &str,
    stream: &mut L4Stream,
) {
    let table = edge.table();
    let cert = match table.tls_alpn01(sni) {
        Some(cert) => Some(cert),
        None if !matches!(table.knows(sni), HostKnowledge::Unknown) => {
            challenges.tls_alpn01(edge, sni).await
        }
        None => None,
    };
    drop(table);
    let Some(cert) = cert else {
        tracing::debug!(
            host = sni,
            "acme-tls/1 handshake for a name without a challenge"
        );
        return;
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(builder) =
        rustls::ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions()
    else {
        return;
    };
    let mut config = builder
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(cert)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    match tokio::time::timeout(HELLO_READ_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(mut tls)) => {
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
            tracing::info!(host = sni, "answered TLS-ALPN-01 challenge");
        }
        Ok(Err(e)) => tracing::debug!(host = sni, error = %e, "TLS-ALPN-01 handshake failed"),
        Err(_) => tracing::debug!(host = sni, "TLS-ALPN-01 handshake timed out"),
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
