//! Challenge answers and the trait that makes them reachable. The acme crate
//! computes an answer ([`Challenge`]); a [`ChallengePublisher`] (in Portico: the
//! control plane, pushing it to every edge) serves it until it is withdrawn.

use std::fmt;

use async_trait::async_trait;
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, KeyPair};

use crate::error::{Error, PublishError};
use crate::issuer::{ChallengeKind, PrivateKeyPem};

/// Makes challenge answers reachable by the CA, and takes them down again.
#[async_trait]
pub trait ChallengePublisher: Send + Sync {
    /// Serve `answer`; return once the CA can see it (e.g. every edge acknowledged).
    async fn publish(&self, answer: &Challenge) -> Result<(), PublishError>;

    /// Stop serving `answer`. Called once for every answer that was passed to
    /// [`publish`](Self::publish) (even if publishing failed half-way), as soon
    /// as validation is over, whether it succeeded or not. Failures are the
    /// publisher's to log.
    async fn withdraw(&self, answer: &Challenge);
}

/// What must be served for the CA to validate one name.
#[derive(Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Serve `key_authorization` as the body of
    /// `GET http://<hostname>/.well-known/acme-challenge/<token>`.
    Http01 {
        hostname: String,
        token: String,
        key_authorization: String,
    },
    /// Present `certificate_pem` (with `key_pem`) to TLS clients that send
    /// SNI `hostname` and ALPN `acme-tls/1`, and offer no other protocol.
    TlsAlpn01 {
        hostname: String,
        certificate_pem: String,
        key_pem: PrivateKeyPem,
    },
}

impl Challenge {
    /// The name this answer proves control of.
    pub fn hostname(&self) -> &str {
        match self {
            Self::Http01 { hostname, .. } | Self::TlsAlpn01 { hostname, .. } => hostname,
        }
    }

    /// The challenge type of this answer.
    pub fn kind(&self) -> ChallengeKind {
        match self {
            Self::Http01 { .. } => ChallengeKind::Http01,
            Self::TlsAlpn01 { .. } => ChallengeKind::TlsAlpn01,
        }
    }
}

impl fmt::Debug for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http01 {
                hostname, token, ..
            } => f
                .debug_struct("Http01")
                .field("hostname", hostname)
                .field("token", token)
                .finish_non_exhaustive(),
            Self::TlsAlpn01 { hostname, .. } => f
                .debug_struct("TlsAlpn01")
                .field("hostname", hostname)
                .finish_non_exhaustive(),
        }
    }
}

/// Build the answer for `hostname` from the CA's token and the key
/// authorization (`token.thumbprint`) and its SHA-256 digest.
pub(crate) fn answer(
    kind: ChallengeKind,
    hostname: &str,
    token: &str,
    key_authorization: &str,
    digest: &[u8],
) -> Result<Challenge, Error> {
    if !is_base64url(token) {
        return Err(Error::Internal(format!(
            "the CA sent a challenge token that is not base64url: {token:?}"
        )));
    }
    Ok(match kind {
        ChallengeKind::Http01 => Challenge::Http01 {
            hostname: hostname.to_owned(),
            token: token.to_owned(),
            key_authorization: key_authorization.to_owned(),
        },
        ChallengeKind::TlsAlpn01 => {
            let (certificate_pem, key_pem) = tls_alpn01_certificate(hostname, digest)?;
            Challenge::TlsAlpn01 {
                hostname: hostname.to_owned(),
                certificate_pem,
                key_pem,
            }
        }
    })
}

/// The RFC 8737 validation certificate: self-signed, SAN = `hostname`, with
/// the critical `acmeIdentifier` extension holding the key authorization's
/// SHA-256 digest. Returns (certificate PEM, key PEM).
pub fn tls_alpn01_certificate(
    hostname: &str,
    digest: &[u8],
) -> Result<(String, PrivateKeyPem), Error> {
    if digest.len() != 32 {
        return Err(Error::Internal(format!(
            "acmeIdentifier needs a SHA-256 digest, got {} bytes",
            digest.len()
        )));
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Error::Internal(format!("challenge key: {e}")))?;
    let mut params = CertificateParams::new(vec![hostname.to_owned()])
        .map_err(|e| Error::InvalidRequest(format!("{hostname:?} as a SAN: {e}")))?;
    params.distinguished_name = DistinguishedName::new();
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let cert = params
        .self_signed(&key)
        .map_err(|e| Error::Internal(format!("challenge certificate: {e}")))?;
    Ok((cert.pem(), PrivateKeyPem::new(key.serialize_pem())))
}

fn is_base64url(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::*;

    use super::*;

    const DIGEST: [u8; 32] = [7; 32];

    #[test]
    fn http01_answer_carries_token_and_key_authorization() {
        let answer = answer(
            ChallengeKind::Http01,
            "a.example",
            "tok_-1",
            "tok_-1.thumb",
            &DIGEST,
        )
        .unwrap();
        assert_eq!(
            answer,
            Challenge::Http01 {
                hostname: "a.example".into(),
                token: "tok_-1".into(),
                key_authorization: "tok_-1.thumb".into(),
            }
        );
        assert_eq!(answer.kind(), ChallengeKind::Http01);
    }

    #[test]
    fn tokens_that_could_escape_a_path_are_refused() {
        for token in ["", "../etc", "a/b", "a b", "a%2f"] {
            let result = answer(ChallengeKind::Http01, "a.example", token, "k", &DIGEST);
            assert!(matches!(result, Err(Error::Internal(_))), "{token:?}");
        }
    }

    #[test]
    fn tls_alpn01_certificate_has_san_and_critical_acme_identifier() {
        let (pem, key) = tls_alpn01_certificate("b.example", &DIGEST).unwrap();
        assert!(key.expose().contains("PRIVATE KEY"));
        let (_, der) = parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = der.parse_x509().unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::DNSName("b.example")]
        );
        let ext = cert
            .extensions()
            .iter()
            .find(|ext| ext.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .unwrap();
        assert!(ext.critical);
        // DER OCTET STRING (0x04, length 32) around the digest.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &DIGEST);
    }

    #[test]
    fn tls_alpn01_refuses_a_digest_of_the_wrong_size() {
        assert!(tls_alpn01_certificate("b.example", &[1; 20]).is_err());
    }

    #[test]
    fn debug_hides_key_material() {
        let answer = answer(ChallengeKind::TlsAlpn01, "c.example", "t", "t.k", &DIGEST).unwrap();
        let debug = format!("{answer:?}");
        assert!(debug.contains("c.example"));
        assert!(!debug.contains("PRIVATE"));
    }
}
