//! The issuing contract: what the control plane asks for ([`IssueRequest`]),
//! what it gets back ([`Issued`]) and the [`Issuer`] trait that ACME and the
//! development CA both implement.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::acme_issuer::AriAdvice;
use crate::certificate::CertificateId;
use crate::challenge::ChallengePublisher;
use crate::error::Error;
use crate::renewal::{self, RenewalWindow};

/// Something that turns an [`IssueRequest`] into a certificate.
#[async_trait]
pub trait Issuer: Send + Sync {
    /// Obtain one certificate covering `req.names`. Challenge answers go
    /// through `publisher`; every answer published is withdrawn again once
    /// the CA has validated (or failed to), before finalization, whether
    /// issuance succeeds or not — but not when the returned future is dropped
    /// mid-way, so publishers should let answers expire.
    async fn issue(
        &self,
        req: &IssueRequest,
        publisher: &dyn ChallengePublisher,
    ) -> Result<Issued, Error>;

    /// Gets ready ahead of the first order (an ACME account is loaded or
    /// created), so that order does not pay for it. Failing here is not
    /// final: issuing tries again.
    async fn prepare(&self) -> Result<(), Error> {
        Ok(())
    }

    /// What the CA's renewal information (ARI, RFC 9773) says about a
    /// certificate it issued: `Ok(None)` when this issuer or its CA has
    /// none. Ask again after [`AriAdvice::poll_after`].
    async fn renewal_info(&self, _certificate: &CertificateId) -> Result<Option<AriAdvice>, Error> {
        Ok(None)
    }
}

/// The challenge type used to prove control of every name in a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChallengeKind {
    /// A token served at `http://<name>/.well-known/acme-challenge/<token>`.
    #[serde(rename = "http-01")]
    Http01,
    /// A self-signed certificate presented for ALPN `acme-tls/1` on port 443.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl ChallengeKind {
    /// The RFC name, e.g. `http-01`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

impl fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request for one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueRequest {
    /// DNS names for the certificate's SAN, already validated by the caller.
    pub names: Vec<String>,
    /// How to prove control of the names.
    pub challenge: ChallengeKind,
    /// The certificate this one replaces (ARI `replaces`), when renewing.
    /// Ignored when the CA does not support ARI.
    pub replaces: Option<CertificateId>,
}

impl IssueRequest {
    /// A new (not a renewal) request for `names`.
    pub fn new(names: Vec<String>, challenge: ChallengeKind) -> Self {
        Self {
            names,
            challenge,
            replaces: None,
        }
    }

    /// The same request, marked as replacing `previous`.
    pub fn replacing(mut self, previous: CertificateId) -> Self {
        self.replaces = Some(previous);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.names.is_empty() {
            return Err(Error::InvalidRequest("no names to certify".into()));
        }
        if self.names.iter().any(|name| name.is_empty()) {
            return Err(Error::InvalidRequest("an empty name".into()));
        }
        Ok(())
    }
}

/// A certificate that was just issued.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Leaf first, then intermediates, PEM.
    pub chain_pem: String,
    /// The leaf's private key (PKCS#8 PEM, ECDSA P-256).
    pub key_pem: PrivateKeyPem,
    /// The leaf's notBefore.
    pub not_before: DateTime<Utc>,
    /// The leaf's notAfter.
    pub not_after: DateTime<Utc>,
    /// The CA's suggested renewal window (ARI), when it publishes one.
    pub ari_window: Option<RenewalWindow>,
    /// The leaf's ARI identifier, for `replaces` and later ARI look-ups;
    /// `None` when the leaf has no authority key identifier.
    pub certificate_id: Option<CertificateId>,
}

impl Issued {
    /// When to renew this certificate; see [`renewal::renew_at`].
    pub fn renew_at(&self, jitter: f64) -> DateTime<Utc> {
        renewal::renew_at(self.not_before, self.not_after, self.ari_window, jitter)
    }
}

/// A PEM private key. `Debug` prints no key material and there is no
/// `Display` or `Serialize`: reading the key takes an explicit [`expose`](Self::expose).
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(String);

impl PrivateKeyPem {
    /// Wrap a PEM string.
    pub fn new(pem: String) -> Self {
        Self(pem)
    }

    /// The PEM text, for encryption at rest or loading into a TLS stack.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The PEM text, consuming the wrapper.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_debug_is_redacted() {
        let key = PrivateKeyPem::new("-----BEGIN PRIVATE KEY-----\nsecret".into());
        assert_eq!(format!("{key:?}"), "PrivateKeyPem(<redacted>)");
        assert!(key.expose().contains("secret"));
    }

    #[test]
    fn requests_need_names() {
        let empty = IssueRequest::new(vec![], ChallengeKind::Http01);
        assert!(matches!(empty.validate(), Err(Error::InvalidRequest(_))));
        let blank = IssueRequest::new(vec![String::new()], ChallengeKind::Http01);
        assert!(matches!(blank.validate(), Err(Error::InvalidRequest(_))));
        let ok = IssueRequest::new(vec!["a.example".into()], ChallengeKind::TlsAlpn01);
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn challenge_kinds_use_rfc_names() {
        assert_eq!(ChallengeKind::TlsAlpn01.to_string(), "tls-alpn-01");
        let json = serde_json::to_string(&ChallengeKind::Http01).unwrap_or_default();
        assert_eq!(json, "\"http-01\"");
    }
}
