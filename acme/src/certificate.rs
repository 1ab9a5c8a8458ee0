//! Certificate plumbing with no network: leaf keys and CSRs (rcgen), reading
//! a returned chain (x509-parser), and the ARI certificate identifier.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The ARI identifier of a certificate (RFC 9773 §4.1):
/// `base64url(authority key id) "." base64url(serial)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CertificateId(String);

impl CertificateId {
    /// Parse a stored identifier.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let valid = text
            .split_once('.')
            .is_some_and(|(aki, serial)| is_base64url(aki) && is_base64url(serial));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(Error::InvalidRequest(format!(
                "not an ARI certificate id: {text:?}"
            )))
        }
    }

    /// The identifier of the first certificate in `chain_pem`; `None` when it
    /// has no authority key identifier.
    pub fn from_chain_pem(chain_pem: &str) -> Result<Option<Self>, Error> {
        Ok(Self::from_leaf_der(&first_certificate(chain_pem)?))
    }

    pub(crate) fn from_leaf_der(leaf: &CertificateDer<'_>) -> Option<Self> {
        instant_acme::CertificateIdentifier::try_from(leaf)
            .ok()
            .map(|id| Self(id.to_string()))
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn to_acme(&self) -> instant_acme::CertificateIdentifier<'_> {
        let (aki, serial) = self.0.split_once('.').unwrap_or((&self.0, ""));
        instant_acme::CertificateIdentifier {
            authority_key_identifier: Cow::Borrowed(aki),
            serial: Cow::Borrowed(serial),
        }
    }
}

impl fmt::Display for CertificateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for CertificateId {
    type Error = Error;

    fn try_from(text: String) -> Result<Self, Error> {
        Self::parse(&text)
    }
}

impl From<CertificateId> for String {
    fn from(id: CertificateId) -> Self {
        id.0
    }
}

/// What the rest of the crate needs from a returned leaf certificate.
#[derive(Debug)]
pub(crate) struct Leaf {
    pub(crate) not_before: DateTime<Utc>,
    pub(crate) not_after: DateTime<Utc>,
    pub(crate) public_key_der: Vec<u8>,
    pub(crate) id: Option<CertificateId>,
}

/// Read the leaf (first certificate) of a PEM chain.
pub(crate) fn parse_leaf(chain_pem: &str) -> Result<Leaf, Error> {
    let der = first_certificate(chain_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| Error::Internal(format!("the CA's leaf certificate does not parse: {e}")))?;
    let validity = cert.validity();
    Ok(Leaf {
        not_before: timestamp(validity.not_before.timestamp())?,
        not_after: timestamp(validity.not_after.timestamp())?,
        public_key_der: cert.public_key().raw.to_vec(),
        id: CertificateId::from_leaf_der(&der),
    })
}

/// A fresh ECDSA P-256 key for a leaf certificate.
pub(crate) fn new_leaf_key() -> Result<KeyPair, Error> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Error::Internal(format!("generating the certificate key: {e}")))
}

/// A DER CSR for `names`, signed by `key`, with an empty subject (the CA
/// takes the names from the SAN extension).
pub(crate) fn csr_der(names: &[String], key: &KeyPair) -> Result<Vec<u8>, Error> {
    let mut params = CertificateParams::new(names.to_vec())
        .map_err(|e| Error::InvalidRequest(format!("names {names:?}: {e}")))?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params
        .serialize_request(key)
        .map_err(|e| Error::Internal(format!("building the CSR: {e}")))?;
    Ok(csr.der().to_vec())
}

fn first_certificate(chain_pem: &str) -> Result<CertificateDer<'static>, Error> {
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or_else(|| Error::Internal("the CA returned no certificate".into()))?
        .map_err(|e| Error::Internal(format!("the CA's chain is not PEM: {e}")))
}

fn timestamp(secs: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp(secs, 0)
        .ok_or_else(|| Error::Internal(format!("certificate time out of range: {secs}")))
}

fn is_base64url(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, IsCa, Issuer, PublicKeyData, SerialNumber};
    use x509_parser::prelude::FromDer;

    use super::*;

    fn signed_chain() -> (String, KeyPair) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(vec![]).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![0xC0, 0xFF, 0xEE]);
        let issuer = Issuer::new(ca, ca_key);
        let key = new_leaf_key().unwrap();
        let mut leaf = CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        leaf.serial_number = Some(SerialNumber::from_slice(&[0xCA, 0xFE]));
        leaf.use_authority_key_identifier_extension = true;
        leaf.not_before = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        leaf.not_after = time::OffsetDateTime::from_unix_timestamp(1_707_776_000).unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key)
    }

    #[test]
    fn leaf_validity_key_and_ari_id_are_read() {
        let (pem, key) = signed_chain();
        let leaf = parse_leaf(&pem).unwrap();
        assert_eq!(leaf.not_before.timestamp(), 1_700_000_000);
        assert_eq!(leaf.not_after.timestamp(), 1_707_776_000);
        assert_eq!(leaf.public_key_der, key.subject_public_key_info());
        assert_eq!(leaf.id.unwrap().as_str(), "wP_u.AMr-");
    }

    #[test]
    fn garbage_chains_are_errors_not_panics() {
        assert!(parse_leaf("").is_err());
        assert!(
            parse_leaf("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err()
        );
    }

    #[test]
    fn certificate_ids_round_trip_and_reject_junk() {
        let id = CertificateId::parse("wP_u.AMr-").unwrap();
        let acme = id.to_acme();
        assert_eq!(acme.authority_key_identifier, "wP_u");
        assert_eq!(acme.serial, "AMr-");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"wP_u.AMr-\"");
        let back: CertificateId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        for junk in ["", "nodot", ".x", "x.", "a.b.c", "a+b.c", "a b.c"] {
            assert!(CertificateId::parse(junk).is_err(), "{junk:?}");
        }
        assert!(serde_json::from_str::<CertificateId>("\"a.b.c\"").is_err());
    }

    #[test]
    fn csr_names_every_requested_name() {
        let key = new_leaf_key().unwrap();
        let names = vec!["a.example".to_owned(), "b.example".to_owned()];
        let der = csr_der(&names, &key).unwrap();
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        csr.verify_signature().unwrap();
        let ext = csr.requested_extensions().unwrap().collect::<Vec<_>>();
        let text = format!("{ext:?}");
        assert!(
            text.contains("a.example") && text.contains("b.example"),
            "{text}"
        );
        assert_eq!(
            csr.certification_request_info.subject_pki.raw,
            key.subject_public_key_info()
        );
    }
}
