//! Shared helpers for the acme crate's integration tests.

#![allow(dead_code)]
// Each test file uses a different part.
// Test support: panicking on a broken fixture is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod pebble;
pub mod responders;

use std::sync::Arc;
use std::time::Duration;

use portico_acme::{AcmeConfig, Timeouts};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

pub use pebble::{Options, Pebble};
pub use responders::{Responders, TestPublisher};

/// Responders first (their ports go into Pebble's config), then Pebble.
pub struct Env {
    pub responders: Responders,
    pub pebble: Pebble,
}

impl Env {
    pub async fn start(options: Options) -> Env {
        let responders = Responders::start().await;
        let pebble = Pebble::start(&options, responders.http_port, responders.tls_port).await;
        Env { responders, pebble }
    }

    /// A configuration for this Pebble: its directory, its TLS root, short polls.
    pub fn config(&self) -> AcmeConfig {
        let mut config = AcmeConfig::new(self.pebble.directory_url.clone());
        config.contact = vec!["mailto:ops@example.com".into()];
        config.extra_root_pem = Some(self.pebble.tls_root_pem.clone());
        config.timeouts = Timeouts {
            request: Duration::from_secs(10),
            validation: Duration::from_secs(20),
            certificate: Duration::from_secs(20),
            poll_interval: Duration::from_millis(100),
        };
        config
    }

    pub fn publisher(&self) -> TestPublisher {
        TestPublisher::new(&self.responders.answers)
    }
}

/// Check with webpki that `chain_pem` (leaf first) chains to `root_pem` and
/// is valid for `name` now.
pub fn verify_chain(chain_pem: &str, root_pem: &str, name: &str) -> Result<(), String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let (leaf, intermediates) = chain.split_first().ok_or("empty chain")?;
    let mut roots = RootCertStore::empty();
    for root in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots
            .add(root.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(leaf, intermediates, &server_name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}
