//! The edge's routing table: an immutable, pre-validated view of one config
//! version that the proxy hooks and the TLS resolver read (through an
//! `ArcSwap<RoutingTable>` owned elsewhere). Built from a [`Snapshot`], moved
//! forward by [`RoutingTable::apply`] (old table + delta → new table, the old
//! one untouched). Pure: no I/O, no clocks, no locks.
//!
//! Everything expensive happens at build time: hostnames and targets are
//! validated, certificates are parsed into [`CertifiedKey`]s, so a handshake
//! or request costs a hash lookup or two and no parsing.
//!
//! Lookup rules, for [`RoutingTable::route`] and the certificate lookups:
//! the name is matched case-insensitively, without a trailing dot or a
//! `:port`; an exact name wins over a wildcard, and `*.example.com` matches
//! exactly one extra label (`a.example.com`, not `b.a.example.com`, not
//! `example.com`).

#[path = "table/build.rs"]
mod build;
#[path = "table/certs.rs"]
mod certs;
#[path = "table/error.rs"]
mod error;
#[path = "table/names.rs"]
mod names;
#[path = "table/snapshot.rs"]
mod snapshot;

#[cfg(test)]
#[path = "table/tests.rs"]
mod tests;
#[cfg(test)]
#[path = "table/tests_delta.rs"]
mod tests_delta;
#[cfg(test)]
#[path = "table/tests_snapshot.rs"]
mod tests_snapshot;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use portico_protocol::{
    CertificateBundle, ChallengeAnswer, ConfigVersion, Delta, EdgeSettings, HostConfig, Snapshot,
};
use rustls::sign::CertifiedKey;

use certs::Parsed;
pub use error::TableError;
pub use names::Target;

/// Whether `token` may be an ACME HTTP-01 token (base64url, 1–256 chars).
pub fn valid_token(token: &str) -> bool {
    names::check_token(token).is_ok()
}

/// Whether `key_authorization` may be served as an HTTP-01 answer.
pub fn valid_key_authorization(key_authorization: &str) -> bool {
    !key_authorization.is_empty() && key_authorization.bytes().all(|b| b.is_ascii_graphic())
}

/// Parses a TLS-ALPN-01 challenge certificate and its key, as the table
/// does for the ones it is sent.
pub fn challenge_key(certificate_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    certs::parse_certified_key(certificate_pem, key_pem, certs::Check::Challenge)
}

/// One config version, ready for lookups. Cheap to share behind an `Arc`.
#[derive(Clone, Default)]
pub struct RoutingTable {
    version: ConfigVersion,
    /// Exact hostname → route.
    exact: HashMap<String, Arc<Route>>,
    /// Parent of a wildcard (`example.com` for `*.example.com`) → route.
    wildcard: HashMap<String, Arc<Route>>,
    /// Exact certificate name → certificate (and the bundle it came from,
    /// shared by all of its names, for [`RoutingTable::to_snapshot`]).
    certs: HashMap<String, Parsed<CertificateBundle>>,
    /// Parent of a wildcard certificate name → certificate.
    wildcard_certs: HashMap<String, Parsed<CertificateBundle>>,
    /// HTTP-01 token → key authorization.
    http01: HashMap<String, String>,
    /// TLS-ALPN-01 hostname → challenge certificate (and its answer).
    tls_alpn01: HashMap<String, Parsed<ChallengeAnswer>>,
    settings: EdgeSettings,
    /// `settings.default_certificate` resolved against the certificates.
    default_cert: Option<Arc<CertifiedKey>>,
    /// Distinct certificates reachable by at least one name.
    certificate_count: usize,
    unknown_changes_skipped: u64,
}

/// How to proxy one configured hostname.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// The host's config as the control plane sent it.
    pub config: HostConfig,
    /// `config.targets`, parsed; same order.
    pub targets: Vec<Target>,
}

/// The result of [`RoutingTable::route`].
#[derive(Clone, Copy, Debug)]
pub enum Lookup<'a> {
    /// The host is configured by that exact name.
    Exact(&'a Arc<Route>),
    /// The host matched a `*.` wildcard one label up.
    Wildcard(&'a Arc<Route>),
    /// Nothing matched: serve the default (unknown host) response.
    Default,
}

/// What the edge knows about an SNI before the handshake: the pre-TLS gate's
/// one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKnowledge {
    /// A certificate covers the name (whether or not a host is configured).
    HasCertificate,
    /// A configured host with `on_demand_tls` and no certificate yet.
    OnDemand,
    /// A configured host without a certificate or on-demand TLS.
    KnownNoCertificate,
    /// No host and no certificate.
    Unknown,
}

impl RoutingTable {
    /// A table with nothing in it, at version 0: every lookup misses.
    pub fn empty() -> Self {
        RoutingTable::default()
    }

    /// Builds and validates the table for a snapshot.
    ///
    /// Fails on an invalid or duplicate hostname, an unparsable target, or a
    /// certificate or challenge certificate that does not parse. When two
    /// certificates claim the same name, the one with the later `not_after`
    /// wins (the later one in the list on a tie).
    pub fn from_snapshot(s: &Snapshot) -> Result<Self, TableError> {
        build::from_snapshot(s.clone())
    }

    /// [`Self::from_snapshot`] for a snapshot the caller no longer needs:
    /// its certificates move into the table instead of being copied.
    pub fn from_owned_snapshot(s: Snapshot) -> Result<Self, TableError> {
        build::from_snapshot(s)
    }

    /// The snapshot this table serves: every host, every certificate with
    /// only the names that still point at it, every challenge, the settings
    /// and the version. `from_snapshot(&t.to_snapshot())` looks up exactly
    /// like `t`. Sorted, so equal tables give equal snapshots.
    pub fn to_snapshot(&self) -> Snapshot {
        snapshot::to_snapshot(self)
    }

    /// Returns the table after `d`, or an error; `self` is never changed.
    ///
    /// Fails if `d.from` is not this table's version, if `d.to <= d.from`,
    /// or if any change is invalid (then no change is applied). Unknown
    /// changes are skipped and counted in [`Self::unknown_changes_skipped`].
    pub fn apply(&self, d: &Delta) -> Result<RoutingTable, TableError> {
        build::apply(self, d)
    }

    /// The table with one more certificate, at the same version: what an
    /// on-demand issuance adds before the control plane's delta arrives.
    pub fn with_certificate(&self, bundle: &CertificateBundle) -> Result<RoutingTable, TableError> {
        build::with_certificate(self, bundle)
    }

    /// The table without the certificates for `names`, at the same version:
    /// only the admin listener's test hook does this (to let the control
    /// plane's health checks notice a missing certificate and re-push it).
    pub fn without_certificates(&self, names: &[String]) -> Result<RoutingTable, TableError> {
        build::without_certificates(self, names)
    }

    /// Up to `limit` configured hostnames no certificate covers (sorted;
    /// which ones are kept past the limit is unspecified), and how many
    /// there are in all. The heartbeat carries them, so the control plane
    /// can tell a host whose certificate an edge lacks. Allocates only the
    /// names it returns.
    pub fn hosts_without_certificate(&self, limit: usize) -> (Vec<String>, usize) {
        let mut missing = Vec::new();
        let mut total = 0;
        let exact = self
            .exact
            .keys()
            .filter(|name| self.certificate_ref(name).is_none())
            .map(|name| (name.as_str(), false));
        let wildcard = self
            .wildcard
            .keys()
            .filter(|parent| !self.wildcard_certs.contains_key(*parent))
            .map(|parent| (parent.as_str(), true));
        for (name, is_wildcard) in exact.chain(wildcard) {
            total += 1;
            if missing.len() < limit {
                missing.push(if is_wildcard {
                    format!("*.{name}")
                } else {
                    name.to_owned()
                });
            }
        }
        missing.sort_unstable();
        (missing, total)
    }

    /// The config version this table is.
    pub fn version(&self) -> ConfigVersion {
        self.version
    }

    /// The edge-wide settings of this version.
    pub fn settings(&self) -> &EdgeSettings {
        &self.settings
    }

    /// The route for a `Host` header or SNI: exact, then wildcard, then
    /// [`Lookup::Default`].
    pub fn route(&self, host: &str) -> Lookup<'_> {
        let name = names::normalise(host);
        if let Some(route) = self.exact.get(name.as_ref()) {
            return Lookup::Exact(route);
        }
        match names::wildcard_parent(&name).and_then(|p| self.wildcard.get(p)) {
            Some(route) => Lookup::Wildcard(route),
            None => Lookup::Default,
        }
    }

    /// The certificate for an SNI: exact name, then wildcard, then none.
    /// Does not fall back to the default certificate.
    pub fn certificate(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        self.certificate_ref(&names::normalise(sni))
            .map(|p| Arc::clone(&p.key))
    }

    /// The certificate for handshakes whose SNI matches nothing (or is
    /// absent), if the settings name one and it exists.
    pub fn default_certificate(&self) -> Option<Arc<CertifiedKey>> {
        self.default_cert.clone()
    }

    /// The key authorization to answer an HTTP-01 token with.
    pub fn http01(&self, token: &str) -> Option<&str> {
        self.http01.get(token).map(String::as_str)
    }

    /// The challenge certificate for an `acme-tls/1` handshake (exact name
    /// only: ACME never validates wildcards over TLS-ALPN-01).
    pub fn tls_alpn01(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn01
            .get(names::normalise(sni).as_ref())
            .map(|p| Arc::clone(&p.key))
    }

    /// What the edge knows about `sni`; see [`HostKnowledge`].
    pub fn knows(&self, sni: &str) -> HostKnowledge {
        let name = names::normalise(sni);
        if self.certificate_ref(&name).is_some() {
            return HostKnowledge::HasCertificate;
        }
        match self.route(&name).route() {
            Some(route) if route.config.on_demand_tls => HostKnowledge::OnDemand,
            Some(_) => HostKnowledge::KnownNoCertificate,
            None => HostKnowledge::Unknown,
        }
    }

    /// Number of configured hostnames (exact and wildcard).
    pub fn host_count(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Number of distinct certificates that still serve at least one name.
    pub fn certificate_count(&self) -> usize {
        self.certificate_count
    }

    /// Unknown changes, challenges and challenge ids skipped since the last
    /// snapshot (the count carries over through [`Self::apply`]).
    pub fn unknown_changes_skipped(&self) -> u64 {
        self.unknown_changes_skipped
    }

    /// Certificate lookup on an already normalised name.
    fn certificate_ref(&self, name: &str) -> Option<&Parsed<CertificateBundle>> {
        self.certs.get(name).or_else(|| {
            names::wildcard_parent(name).and_then(|parent| self.wildcard_certs.get(parent))
        })
    }
}

impl<'a> Lookup<'a> {
    /// The matched route, if any.
    pub fn route(self) -> Option<&'a Arc<Route>> {
        match self {
            Lookup::Exact(route) | Lookup::Wildcard(route) => Some(route),
            Lookup::Default => None,
        }
    }
}

impl fmt::Debug for RoutingTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutingTable")
            .field("version", &self.version)
            .field("hosts", &self.host_count())
            .field("certificates", &self.certificate_count)
            .field("http01", &self.http01.len())
            .field("tls_alpn01", &self.tls_alpn01.len())
            .field("settings", &self.settings)
            .field("unknown_changes_skipped", &self.unknown_changes_skipped)
            .finish_non_exhaustive()
    }
}
