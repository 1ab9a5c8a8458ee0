//! How to reach a CA ([`AcmeConfig`]) and the account held there
//! ([`AccountCredentials`], serde so the control plane can store it encrypted).

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Everything needed to talk to one ACME CA.
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    /// The directory URL, e.g. Let's Encrypt's or a Pebble's `https://127.0.0.1:PORT/dir`.
    pub directory_url: String,
    /// Account contacts (`mailto:` URLs); only used when creating an account.
    pub contact: Vec<String>,
    /// External account binding (ZeroSSL, some commercial CAs); only used
    /// when creating an account.
    pub external_account: Option<ExternalAccountBinding>,
    /// A PEM root to trust for the CA's own HTTPS, besides the platform's
    /// roots (Pebble's test certificate, a private CA).
    pub extra_root_pem: Option<String>,
    /// Deadlines.
    pub timeouts: Timeouts,
}

impl AcmeConfig {
    /// A configuration with no contact, no EAB, no extra root and default deadlines.
    pub fn new(directory_url: impl Into<String>) -> Self {
        Self {
            directory_url: directory_url.into(),
            contact: Vec::new(),
            external_account: None,
            extra_root_pem: None,
            timeouts: Timeouts::default(),
        }
    }
}

/// How long each stage may take before the issuance fails as `Unavailable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// One HTTP exchange with the CA (connect, headers and body).
    pub request: Duration,
    /// From the last challenge marked ready until the order is ready.
    pub validation: Duration,
    /// From finalization until the certificate can be downloaded.
    pub certificate: Duration,
    /// The first wait between two polls; it grows by half each time.
    pub poll_interval: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            request: Duration::from_secs(30),
            validation: Duration::from_secs(120),
            certificate: Duration::from_secs(120),
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// An external account binding: key id and HMAC key, as the CA handed them out.
#[derive(Clone)]
pub struct ExternalAccountBinding {
    key_id: String,
    hmac_key: Vec<u8>,
}

impl ExternalAccountBinding {
    /// A binding from a raw HMAC key.
    pub fn new(key_id: impl Into<String>, hmac_key: Vec<u8>) -> Self {
        Self {
            key_id: key_id.into(),
            hmac_key,
        }
    }

    /// A binding from the base64url HMAC key that ZeroSSL (and RFC 8555
    /// examples) hand out.
    pub fn from_base64url(key_id: impl Into<String>, hmac_key: &str) -> Result<Self, Error> {
        let hmac_key = URL_SAFE_NO_PAD
            .decode(hmac_key.trim().trim_end_matches('='))
            .map_err(|e| Error::Config(format!("EAB HMAC key is not base64url: {e}")))?;
        if hmac_key.is_empty() {
            return Err(Error::Config("EAB HMAC key is empty".into()));
        }
        Ok(Self::new(key_id, hmac_key))
    }

    pub(crate) fn to_acme(&self) -> instant_acme::ExternalAccountKey {
        instant_acme::ExternalAccountKey::new(self.key_id.clone(), &self.hmac_key)
    }
}

impl fmt::Debug for ExternalAccountBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalAccountBinding")
            .field("key_id", &self.key_id)
            .field("hmac_key", &"<redacted>")
            .finish()
    }
}

/// An ACME account: its URL, its private key and the directory it lives in.
/// Serialize it (JSON) to store it, encrypted; `Debug` shows nothing of it.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountCredentials(pub(crate) instant_acme::AccountCredentials);

impl AccountCredentials {
    /// JSON text, for encryption at rest.
    pub fn to_json(&self) -> Result<String, Error> {
        serde_json::to_string(self)
            .map_err(|e| Error::Internal(format!("serializing account credentials: {e}")))
    }

    /// Read credentials written by [`to_json`](Self::to_json).
    pub fn from_json(json: &str) -> Result<Self, Error> {
        serde_json::from_str(json)
            .map_err(|e| Error::Config(format!("stored account credentials do not parse: {e}")))
    }

    /// The directory URL the account belongs to (absent in credentials
    /// written by instant-acme before 0.4).
    pub fn directory_url(&self) -> Option<String> {
        let value = serde_json::to_value(&self.0).ok()?;
        value.get("directory")?.as_str().map(str::to_owned)
    }
}

impl fmt::Debug for AccountCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountCredentials(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORED: &str = r#"{"id":"https://ca.example/acct/1","key_pkcs8":"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJVWC_QzOTCS5vtsJp2IG-UDc8cdDfeoKtxSZxaznM-mhRANCAAQenCPoGgPFTdPJ7VLLKt56RxPlYT1wNXnHc54PEyBg3LxKaH0-sJkX0mL8LyPEdsfL_Oz4TxHkWLJGrXVtNhfH","directory":"https://ca.example/dir"}"#;

    #[test]
    fn credentials_round_trip_and_stay_private() {
        let creds = AccountCredentials::from_json(STORED).unwrap();
        assert_eq!(
            creds.directory_url().as_deref(),
            Some("https://ca.example/dir")
        );
        assert_eq!(format!("{creds:?}"), "AccountCredentials(<redacted>)");
        let again = AccountCredentials::from_json(&creds.to_json().unwrap()).unwrap();
        assert_eq!(again.to_json().unwrap(), creds.to_json().unwrap());
        assert!(matches!(
            AccountCredentials::from_json("{}"),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn eab_keys_decode_and_stay_private() {
        let eab = ExternalAccountBinding::from_base64url(
            "kid-1",
            "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
        )
        .unwrap();
        assert_eq!(eab.hmac_key.len(), 48);
        assert!(!format!("{eab:?}").contains("zWND"));
        assert!(ExternalAccountBinding::from_base64url("kid", "not base64!").is_err());
        assert!(ExternalAccountBinding::from_base64url("kid", "").is_err());
    }
}
