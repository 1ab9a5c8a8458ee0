//! Writing a routing table back as the [`Snapshot`] it serves, so the edge
//! can persist what it has after deltas and on-demand certificates.
//!
//! A certificate bundle is written with only the names that still point at
//! it: after `RemoveCertificate` of one of its names, or after a newer
//! bundle took a name over, the old bundle no longer claims that name, so
//! the name does not come back when the snapshot is loaded again. A bundle
//! no name points at is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use portico_protocol::{
    CertificateBundle, ChallengeAnswer, HostConfig, PROTOCOL_VERSION, Snapshot,
};

use super::RoutingTable;

/// See [`RoutingTable::to_snapshot`].
pub(super) fn to_snapshot(t: &RoutingTable) -> Snapshot {
    let mut hosts: Vec<HostConfig> = t
        .exact
        .values()
        .chain(t.wildcard.values())
        .map(|route| route.config.clone())
        .collect();
    hosts.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    Snapshot {
        v: PROTOCOL_VERSION,
        version: t.version,
        hosts,
        certificates: certificates(t),
        challenges: challenges(t),
        settings: t.settings.clone(),
    }
}

/// Every bundle some name still points at, with just those names (in the
/// bundle's own order), sorted by first name.
fn certificates(t: &RoutingTable) -> Vec<CertificateBundle> {
    // Bundle (by identity) → the names that point at it.
    let mut live: HashMap<*const CertificateBundle, (&Arc<CertificateBundle>, HashSet<String>)> =
        HashMap::new();
    let exact = t.certs.iter().map(|(name, p)| (name.clone(), p));
    let wildcard = t
        .wildcard_certs
        .iter()
        .map(|(parent, p)| (format!("*.{parent}"), p));
    for (name, parsed) in exact.chain(wildcard) {
        live.entry(Arc::as_ptr(&parsed.source))
            .or_insert_with(|| (&parsed.source, HashSet::new()))
            .1
            .insert(name);
    }
    let mut bundles: Vec<CertificateBundle> = live
        .into_values()
        .map(|(bundle, mut names)| CertificateBundle {
            // Names were validated as stored, so each map key is the name
            // exactly as the bundle lists it; `remove` also drops duplicates.
            names: bundle
                .names
                .iter()
                .filter(|name| names.remove(name.as_str()))
                .cloned()
                .collect(),
            chain_pem: bundle.chain_pem.clone(),
            key_pem: bundle.key_pem.clone(),
            not_after: bundle.not_after,
        })
        .filter(|bundle| !bundle.names.is_empty())
        .collect();
    bundles.sort_by(|a, b| a.names.cmp(&b.names));
    bundles
}

/// HTTP-01 answers by token, then TLS-ALPN-01 answers by hostname.
fn challenges(t: &RoutingTable) -> Vec<ChallengeAnswer> {
    let mut http01: Vec<(&String, &String)> = t.http01.iter().collect();
    http01.sort();
    let mut tls_alpn01: Vec<(&String, &ChallengeAnswer)> = t
        .tls_alpn01
        .iter()
        .map(|(name, p)| (name, p.source.as_ref()))
        .collect();
    tls_alpn01.sort_by(|a, b| a.0.cmp(b.0));
    http01
        .into_iter()
        .map(|(token, key_authorization)| ChallengeAnswer::Http01 {
            token: token.clone(),
            key_authorization: key_authorization.clone(),
        })
        .chain(tls_alpn01.into_iter().map(|(_, answer)| answer.clone()))
        .collect()
}
