//! Turns PEM certificate chains and keys from the control plane into the
//! `rustls` [`CertifiedKey`]s the TLS resolver hands out, once, at build time,
//! and keeps each beside the data it came from ([`Parsed`]).

use std::sync::Arc;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{Error, InconsistentKeys};

/// A parsed key pair and what it was parsed from (a `CertificateBundle` or
/// a TLS-ALPN-01 `ChallengeAnswer`), so that the table can be written back
/// as a snapshot. Cloning bumps two reference counts: every name of a bundle
/// shares one parsed key and one copy of the PEM.
#[derive(Clone)]
pub(super) struct Parsed<S> {
    /// What the TLS resolver hands out.
    pub(super) key: Arc<CertifiedKey>,
    /// The source data.
    pub(super) source: Arc<S>,
}

/// How strictly the end-entity certificate is checked against its key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// Serving certificates: webpki must parse it and the key must match.
    Strict,
    /// TLS-ALPN-01 challenge certificates carry the critical `acmeIdentifier`
    /// extension, which webpki refuses to parse; only a provable key
    /// mismatch is an error for them.
    Challenge,
}

/// Parses a PEM chain (end-entity first) and its PEM private key, and checks
/// that the key belongs to the end-entity certificate.
pub(super) fn parse_certified_key(
    chain_pem: &str,
    key_pem: &str,
    check: Check,
) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate chain PEM: {e}"))?;
    if chain.is_empty() {
        return Err("certificate chain PEM holds no certificate".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("private key PEM: {e}"))?;
    let signing_key =
        any_supported_type(&key).map_err(|e| format!("private key is not usable: {e}"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // ring cannot always tell the public key (e.g. some RSA encodings):
        // accept, as rustls itself does.
        Ok(()) | Err(Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(Arc::new(certified)),
        Err(Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err("private key does not match the certificate".to_owned())
        }
        Err(Error::InvalidCertificate(_)) if check == Check::Challenge => Ok(Arc::new(certified)),
        Err(e) => Err(format!("end-entity certificate: {e}")),
    }
}
