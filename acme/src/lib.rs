//! ACME *mechanism* for Portico: it obtains certificates when asked and knows
//! nothing of tenants, Postgres or jobs — who may get a certificate, when, and
//! from which CA is the control plane's policy.
//!
//! How data flows: the control plane builds an [`IssueRequest`] (names, challenge
//! kind, the certificate it replaces) and hands it to an [`Issuer`] together
//! with a [`ChallengePublisher`]. [`AcmeIssuer`] opens an order at the CA, turns
//! each pending authorization into a [`Challenge`] answer (an HTTP-01 key
//! authorization, or a TLS-ALPN-01 certificate built here with rcgen), asks the
//! publisher to make it reachable (the control plane pushes it to every edge),
//! tells the CA to validate, waits, withdraws every answer, finalizes with a
//! fresh P-256 key and returns an [`Issued`]: chain, key (redacted in `Debug`),
//! validity and the CA's ARI window. [`DevCa`] does the same with no network,
//! signing from a local root. Failures come back as an [`Error`] that says
//! whether and when a retry makes sense, and [`renew_at`] / [`is_due`] turn a
//! certificate's validity into the moment to start again. The account lives in
//! [`AccountCredentials`], which the control plane stores encrypted.

mod account;
mod acme_issuer;
mod certificate;
mod challenge;
mod classify;
mod dev_ca;
mod error;
mod http;
mod issuer;
mod order;
mod renewal;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use account::{AccountCredentials, AcmeConfig, ExternalAccountBinding, Timeouts};
pub use acme_issuer::{AcmeIssuer, AriAdvice};
pub use certificate::CertificateId;
pub use challenge::{Challenge, ChallengePublisher, tls_alpn01_certificate};
pub use dev_ca::DevCa;
pub use error::{Error, PublishError};
pub use issuer::{ChallengeKind, IssueRequest, Issued, Issuer, PrivateKeyPem};
pub use renewal::{RenewalWindow, is_due, renew_at};
