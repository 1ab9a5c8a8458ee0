//! The config the control plane pushes: a [`Snapshot`] of every host, its
//! certificates, pending ACME challenge answers and edge-wide settings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Monotonic version of the whole config; every delta moves it forward.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ConfigVersion(pub u64);

impl fmt::Display for ConfigVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The whole config at one version; replaces whatever the edge had.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Protocol version of the sender.
    pub v: u32,
    /// The config version this snapshot is.
    pub version: ConfigVersion,
    /// Every host the edge serves.
    #[serde(default)]
    pub hosts: Vec<HostConfig>,
    /// Every certificate the edge may present.
    #[serde(default)]
    pub certificates: Vec<CertificateBundle>,
    /// ACME challenge answers to serve right now.
    #[serde(default)]
    pub challenges: Vec<ChallengeAnswer>,
    /// Edge-wide settings.
    #[serde(default)]
    pub settings: EdgeSettings,
}

/// First frame of a snapshot sent in parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotBegin {
    /// Protocol version of the sender.
    pub v: u32,
    /// The config version the whole snapshot is.
    pub version: ConfigVersion,
    /// Edge-wide settings.
    #[serde(default)]
    pub settings: EdgeSettings,
}

/// Some of the hosts, certificates and challenges of a snapshot in parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// Protocol version of the sender.
    pub v: u32,
    /// More hosts.
    #[serde(default)]
    pub hosts: Vec<HostConfig>,
    /// More certificates.
    #[serde(default)]
    pub certificates: Vec<CertificateBundle>,
    /// More challenge answers.
    #[serde(default)]
    pub challenges: Vec<ChallengeAnswer>,
}

/// Last frame of a snapshot in parts: the totals the receiver must have seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEnd {
    /// Protocol version of the sender.
    pub v: u32,
    /// Same as the begin frame's version.
    pub version: ConfigVersion,
    /// Hosts sent in all chunks.
    pub hosts: u64,
    /// Certificates sent in all chunks.
    pub certificates: u64,
    /// Challenge answers sent in all chunks.
    pub challenges: u64,
}

/// How one hostname is proxied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostConfig {
    /// Exact (`shop.example.com`) or wildcard (`*.example.com`), lowercase
    /// A-label, no trailing dot.
    pub hostname: String,
    /// Upstreams as `host:port` (`[v6]:port` for IPv6 literals).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Talk TLS to the upstream.
    #[serde(default)]
    pub target_tls: bool,
    /// SNI to send upstream; `None` means the target's host.
    #[serde(default)]
    pub target_sni: Option<String>,
    /// Verify the upstream's certificate (only with `target_tls`).
    #[serde(default = "default_true")]
    pub verify_target_tls: bool,
    /// Forward the client's `Host` header instead of the target's.
    #[serde(default)]
    pub keep_host: bool,
    /// Redirects applied before proxying, in order.
    #[serde(default)]
    pub redirects: Vec<Redirect>,
    /// Issue a certificate on the first handshake if none exists.
    #[serde(default)]
    pub on_demand_tls: bool,
    /// Capture requests into a bin instead of (or as well as) proxying.
    #[serde(default)]
    pub bin_capture: Option<BinCapture>,
    /// Serve the branded status page when the upstream is down.
    #[serde(default)]
    pub status_page: bool,
}

impl HostConfig {
    /// A host with `hostname` and every other field at its serde default.
    pub fn new(hostname: impl Into<String>) -> Self {
        HostConfig {
            hostname: hostname.into(),
            targets: Vec::new(),
            target_tls: false,
            target_sni: None,
            verify_target_tls: true,
            keep_host: false,
            redirects: Vec::new(),
            on_demand_tls: false,
            bin_capture: None,
            status_page: false,
        }
    }
}

fn default_true() -> bool {
    true
}

/// A redirect rule of a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Redirect {
    /// `http://` → `https://`.
    ToHttps,
    /// `www.example.com` → `example.com`.
    WwwToApex,
    /// `example.com` → `www.example.com`.
    ApexToWww,
    /// A rule from a newer control plane; the edge ignores it.
    #[serde(other)]
    Unknown,
}

/// Where captured requests go (placeholder until request bins land).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinCapture {
    /// The bin to capture into.
    pub bin_id: String,
}

/// A certificate chain and its private key, for the names it covers.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateBundle {
    /// Names served with this certificate (exact or `*.` wildcard).
    pub names: Vec<String>,
    /// PEM chain, end-entity certificate first.
    pub chain_pem: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
    /// Expiry of the end-entity certificate, unix seconds.
    #[serde(default)]
    pub not_after: i64,
}

impl fmt::Debug for CertificateBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateBundle")
            .field("names", &self.names)
            .field(
                "chain_pem",
                &format_args!("[{} bytes]", self.chain_pem.len()),
            )
            .field("key_pem", &format_args!("[redacted]"))
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// An ACME challenge answer the edge serves while an order is pending.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChallengeAnswer {
    /// Answer `GET /.well-known/acme-challenge/{token}` with the key
    /// authorization.
    Http01 {
        /// The token from the challenge URL.
        token: String,
        /// The body to answer with.
        key_authorization: String,
    },
    /// Present this self-signed certificate to `acme-tls/1` handshakes for
    /// `hostname`.
    TlsAlpn01 {
        /// The name being validated.
        hostname: String,
        /// PEM of the challenge certificate.
        certificate_pem: String,
        /// PEM of its private key.
        key_pem: String,
    },
    /// A challenge kind from a newer control plane; the edge skips it.
    #[serde(other)]
    Unknown,
}

impl fmt::Debug for ChallengeAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChallengeAnswer::Http01 {
                token,
                key_authorization,
            } => f
                .debug_struct("Http01")
                .field("token", token)
                .field("key_authorization", key_authorization)
                .finish(),
            ChallengeAnswer::TlsAlpn01 {
                hostname,
                certificate_pem,
                key_pem: _,
            } => f
                .debug_struct("TlsAlpn01")
                .field("hostname", hostname)
                .field(
                    "certificate_pem",
                    &format_args!("[{} bytes]", certificate_pem.len()),
                )
                .field("key_pem", &format_args!("[redacted]"))
                .finish(),
            ChallengeAnswer::Unknown => f.write_str("Unknown"),
        }
    }
}

/// Edge-wide settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EdgeSettings {
    /// A name whose certificate serves handshakes for unknown SNI; `None`
    /// means such handshakes fail.
    pub default_certificate: Option<String>,
    /// How long a handshake waits for an on-demand certificate, in ms.
    pub on_demand_wait_ms: u64,
    /// Largest request body proxied, in bytes.
    pub max_request_body_bytes: u64,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        EdgeSettings {
            default_certificate: None,
            on_demand_wait_ms: 10_000,
            max_request_body_bytes: 10 * 1024 * 1024,
        }
    }
}
