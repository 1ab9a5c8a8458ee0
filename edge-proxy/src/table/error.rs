//! Why a snapshot or delta was refused; every message names the host,
//! certificate or challenge at fault.

use std::fmt;

use portico_protocol::ConfigVersion;

/// A snapshot or delta the routing table refused; nothing was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    /// A hostname or certificate name is not a lowercase A-label (or `*.`
    /// followed by one).
    InvalidHostname {
        /// The name as sent.
        hostname: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A snapshot lists the same hostname twice.
    DuplicateHost {
        /// The hostname.
        hostname: String,
    },
    /// A target of a host is not `host:port`.
    InvalidTarget {
        /// The host it belongs to.
        hostname: String,
        /// The target as sent.
        target: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The upstream SNI of a host is not a DNS name.
    InvalidTargetSni {
        /// The host it belongs to.
        hostname: String,
        /// The SNI as sent.
        sni: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A certificate bundle does not parse or its key does not match.
    InvalidCertificate {
        /// The names the bundle was for.
        names: Vec<String>,
        /// What is wrong with it.
        reason: String,
    },
    /// An ACME challenge answer is malformed.
    InvalidChallenge {
        /// The token or hostname of the challenge.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Redirect rules that would send a client round in a loop
    /// (`www_to_apex` on `www.x` while `x` has `apex_to_www`, or both rules
    /// on one host).
    RedirectCycle {
        /// The host whose rules close the loop.
        hostname: String,
    },
    /// A value is larger than the edge accepts.
    TooLarge {
        /// What (e.g. `targets of shop.example.com`).
        what: String,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A delta was made for another version than this table's.
    VersionMismatch {
        /// This table's version.
        current: ConfigVersion,
        /// The delta's `from`.
        from: ConfigVersion,
    },
    /// A delta does not move the version forward.
    NotForward {
        /// The delta's `from`.
        from: ConfigVersion,
        /// The delta's `to`.
        to: ConfigVersion,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::InvalidHostname { hostname, reason } => {
                write!(f, "hostname {hostname:?} {reason}")
            }
            TableError::DuplicateHost { hostname } => {
                write!(f, "hostname {hostname:?} is configured twice")
            }
            TableError::InvalidTarget {
                hostname,
                target,
                reason,
            } => write!(f, "target {target:?} of host {hostname:?}: {reason}"),
            TableError::InvalidTargetSni {
                hostname,
                sni,
                reason,
            } => write!(f, "target SNI {sni:?} of host {hostname:?} {reason}"),
            TableError::InvalidCertificate { names, reason } => {
                write!(f, "certificate for {}: {reason}", names.join(", "))
            }
            TableError::InvalidChallenge { id, reason } => {
                write!(f, "ACME challenge {id:?}: {reason}")
            }
            TableError::RedirectCycle { hostname } => {
                write!(
                    f,
                    "redirects of {hostname:?} form a loop (www_to_apex and apex_to_www)"
                )
            }
            TableError::TooLarge { what, size, max } => {
                write!(f, "{what}: {size} is over the limit of {max}")
            }
            TableError::VersionMismatch { current, from } => write!(
                f,
                "delta applies to version {from}, but the table is at version {current}"
            ),
            TableError::NotForward { from, to } => {
                write!(f, "delta goes from version {from} to {to}, not forward")
            }
        }
    }
}

impl std::error::Error for TableError {}
