//! Incremental config updates: a [`Delta`] moves the edge from one
//! [`ConfigVersion`] to a later one through a list of [`Change`]s.

use serde::{Deserialize, Serialize};

use crate::config::{CertificateBundle, ChallengeAnswer, ConfigVersion, EdgeSettings, HostConfig};

/// Changes that turn config `from` into config `to`; applied all or nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Protocol version of the sender.
    pub v: u32,
    /// The version this delta applies to.
    pub from: ConfigVersion,
    /// The version after applying it; greater than `from`.
    pub to: ConfigVersion,
    /// The changes, applied in order.
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// One change of a [`Delta`], tagged by `op`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Add a host, or replace the one with the same hostname.
    UpsertHost {
        /// The new config of the host.
        host: HostConfig,
    },
    /// Remove a host; removing an absent host is not an error.
    RemoveHost {
        /// Hostname exactly as it was upserted.
        hostname: String,
    },
    /// Serve this certificate for each of its names, replacing older ones.
    UpsertCertificate {
        /// The certificate.
        certificate: CertificateBundle,
    },
    /// Stop serving any certificate for these names.
    RemoveCertificate {
        /// Names exactly as they were upserted.
        names: Vec<String>,
    },
    /// Start answering an ACME challenge.
    AddChallenge {
        /// The answer to serve.
        challenge: ChallengeAnswer,
    },
    /// Stop answering an ACME challenge.
    RemoveChallenge {
        /// Which challenge.
        id: ChallengeId,
    },
    /// Replace the edge-wide settings.
    Settings {
        /// The new settings.
        settings: EdgeSettings,
    },
    /// An `op` from a newer control plane; the edge skips and counts it.
    #[serde(other)]
    Unknown,
}

/// Identifies a [`ChallengeAnswer`] for removal, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChallengeId {
    /// An HTTP-01 answer, by token.
    Http01 {
        /// The token.
        token: String,
    },
    /// A TLS-ALPN-01 answer, by hostname.
    TlsAlpn01 {
        /// The hostname.
        hostname: String,
    },
    /// A challenge kind from a newer control plane; the edge skips it.
    #[serde(other)]
    Unknown,
}

impl ChallengeAnswer {
    /// The id that removes this answer.
    pub fn id(&self) -> ChallengeId {
        match self {
            ChallengeAnswer::Http01 { token, .. } => ChallengeId::Http01 {
                token: token.clone(),
            },
            ChallengeAnswer::TlsAlpn01 { hostname, .. } => ChallengeId::TlsAlpn01 {
                hostname: hostname.clone(),
            },
            ChallengeAnswer::Unknown => ChallengeId::Unknown,
        }
    }
}
