//! Test support, behind the `test-util` feature: a real Pebble ACME server
//! (and pebble-challtestsrv as its DNS, answering 127.0.0.1 for every name)
//! as child processes on free ports, the challenge responders an edge would
//! run, and chain verification against Pebble's root. This crate's own
//! Pebble tests use it, and so do the end-to-end tests (`portico-e2e`), which
//! point Pebble's validation ports at a real edge instead of [`Responders`].
//!
//! Nothing here panics: a fixture that cannot start is a [`HarnessError`]
//! naming what failed, with Pebble's logs when Pebble is the cause.

mod pebble;
mod responders;

use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{AcmeConfig, Timeouts};

pub use pebble::{Options, Pebble, https_get};
pub use responders::{Answers, Responders, TestPublisher};

/// Why a test fixture could not start or a check could not run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HarnessError(String);

impl HarnessError {
    pub fn new(message: impl Into<String>) -> HarnessError {
        HarnessError(message.into())
    }
}

/// Adds what was being done to any displayable error.
pub(crate) trait Context<T> {
    fn context(self, doing: &str) -> Result<T, HarnessError>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn context(self, doing: &str) -> Result<T, HarnessError> {
        self.map_err(|e| HarnessError(format!("{doing}: {e}")))
    }
}

/// Responders first (their ports go into Pebble's config), then Pebble.
pub struct Env {
    pub responders: Responders,
    pub pebble: Pebble,
}

impl Env {
    pub async fn start(options: Options) -> Result<Env, HarnessError> {
        let responders = Responders::start().await?;
        let pebble = Pebble::start(&options, responders.http_port, responders.tls_port).await?;
        Ok(Env { responders, pebble })
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
pub fn verify_chain(chain_pem: &str, root_pem: &str, name: &str) -> Result<(), HarnessError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the chain")?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| HarnessError::new("empty chain"))?;
    let mut roots = RootCertStore::empty();
    for root in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots
            .add(root.context("reading the root")?)
            .context("adding the root")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .context("building the verifier")?;
    let server_name = ServerName::try_from(name.to_owned()).context("the server name")?;
    verifier
        .verify_server_cert(leaf, intermediates, &server_name, &[], UnixTime::now())
        .map(|_| ())
        .context("verifying the chain")
}
