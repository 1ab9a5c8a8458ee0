//! Building routing tables: validating a snapshot into a fresh table, and
//! applying a delta to a copy of an existing one (all or nothing).

use std::collections::HashSet;
use std::sync::Arc;

use portico_protocol::{
    CertificateBundle, ChallengeAnswer, ChallengeId, Change, Delta, HostConfig, Redirect, Snapshot,
};

use super::certs::{Check, Parsed, parse_certified_key};
use super::names::{self, NameKey};
use super::{Route, RoutingTable, TableError};

/// See [`RoutingTable::from_snapshot`].
pub(super) fn from_snapshot(s: Snapshot) -> Result<RoutingTable, TableError> {
    let Snapshot {
        version,
        hosts,
        certificates,
        challenges,
        settings,
        ..
    } = s;
    let mut table = RoutingTable {
        version,
        settings,
        ..RoutingTable::default()
    };
    for host in &hosts {
        let (key, route) = build_route(host)?;
        if table.insert_route(key, route).is_some() {
            return Err(TableError::DuplicateHost {
                hostname: host.hostname.clone(),
            });
        }
    }
    // Inserting in ascending expiry makes the latest-expiring bundle win a
    // name; the sort is stable, so on a tie the later one in the list wins.
    let mut bundles = certificates;
    bundles.sort_by_key(|b| b.not_after);
    for bundle in bundles {
        table.upsert_certificate(Arc::new(bundle))?;
    }
    for challenge in &challenges {
        table.add_challenge(challenge)?;
    }
    for host in &hosts {
        table.check_redirects(&host.hostname)?;
    }
    table.finish();
    Ok(table)
}

/// See [`RoutingTable::apply`].
pub(super) fn apply(old: &RoutingTable, d: &Delta) -> Result<RoutingTable, TableError> {
    if d.from != old.version {
        return Err(TableError::VersionMismatch {
            current: old.version,
            from: d.from,
        });
    }
    if d.to <= d.from {
        return Err(TableError::NotForward {
            from: d.from,
            to: d.to,
        });
    }
    let mut next = old.clone();
    for change in &d.changes {
        next.apply_change(change)?;
    }
    for change in &d.changes {
        if let Change::UpsertHost { host } = change {
            next.check_redirects(&host.hostname)?;
        }
    }
    next.version = d.to;
    next.finish();
    Ok(next)
}

/// See [`RoutingTable::with_certificate`].
pub(super) fn with_certificate(
    old: &RoutingTable,
    bundle: &CertificateBundle,
) -> Result<RoutingTable, TableError> {
    let mut next = old.clone();
    next.upsert_certificate(Arc::new(bundle.clone()))?;
    next.finish();
    Ok(next)
}

/// `old` without the certificates named `names`, at the same version (the
/// edge's test hook; see `admin.rs`).
pub(super) fn without_certificates(
    old: &RoutingTable,
    names: &[String],
) -> Result<RoutingTable, TableError> {
    let mut next = old.clone();
    next.apply_change(&Change::RemoveCertificate {
        names: names.to_vec(),
    })?;
    next.finish();
    Ok(next)
}

impl RoutingTable {
    fn apply_change(&mut self, change: &Change) -> Result<(), TableError> {
        match change {
            Change::UpsertHost { host } => {
                let (key, route) = build_route(host)?;
                self.insert_route(key, route);
            }
            Change::RemoveHost { hostname } => {
                match parse_hostname(hostname)? {
                    NameKey::Exact(name) => self.exact.remove(&name),
                    NameKey::Wildcard(parent) => self.wildcard.remove(&parent),
                };
            }
            Change::UpsertCertificate { certificate } => {
                self.upsert_certificate(Arc::new(certificate.clone()))?;
            }
            Change::RemoveCertificate { names } => {
                for name in names {
                    match parse_hostname(name)? {
                        NameKey::Exact(name) => self.certs.remove(&name),
                        NameKey::Wildcard(parent) => self.wildcard_certs.remove(&parent),
                    };
                }
            }
            Change::AddChallenge { challenge } => self.add_challenge(challenge)?,
            Change::RemoveChallenge { id } => self.remove_challenge(id),
            Change::Settings { settings } => self.settings = settings.clone(),
            Change::Unknown => self.unknown_changes_skipped += 1,
        }
        Ok(())
    }

    /// Refuses a redirect loop through `hostname`: both rules on it, or a
    /// `www.` host sending to an apex that sends back (either direction).
    fn check_redirects(&self, hostname: &str) -> Result<(), TableError> {
        let has = |name: &str, rule: Redirect| {
            self.exact
                .get(name)
                .is_some_and(|r| r.config.redirects.contains(&rule))
        };
        let cycle = || TableError::RedirectCycle {
            hostname: hostname.to_owned(),
        };
        if has(hostname, Redirect::WwwToApex) && has(hostname, Redirect::ApexToWww) {
            return Err(cycle());
        }
        if let Some(apex) = hostname.strip_prefix("www.")
            && has(hostname, Redirect::WwwToApex)
            && has(apex, Redirect::ApexToWww)
        {
            return Err(cycle());
        }
        let www = format!("www.{hostname}");
        if has(hostname, Redirect::ApexToWww) && has(&www, Redirect::WwwToApex) {
            return Err(cycle());
        }
        Ok(())
    }

    /// Inserts a route, returning the one it replaced.
    fn insert_route(&mut self, key: NameKey, route: Arc<Route>) -> Option<Arc<Route>> {
        match key {
            NameKey::Exact(name) => self.exact.insert(name, route),
            NameKey::Wildcard(parent) => self.wildcard.insert(parent, route),
        }
    }

    /// Parses a bundle and points each of its names at it.
    fn upsert_certificate(&mut self, bundle: Arc<CertificateBundle>) -> Result<(), TableError> {
        let invalid = |reason: String| TableError::InvalidCertificate {
            names: bundle.names.clone(),
            reason,
        };
        if bundle.names.is_empty() {
            return Err(invalid("bundle has no names".to_owned()));
        }
        // A chain of a few certificates is a few KiB; 100 names is the CA limit.
        limit(
            || format!("chain of {}", bundle.names.join(", ")),
            bundle.chain_pem.len(),
            64 * 1024,
        )?;
        limit(
            || format!("key of {}", bundle.names.join(", ")),
            bundle.key_pem.len(),
            16 * 1024,
        )?;
        limit(
            || "names of a certificate".to_owned(),
            bundle.names.len(),
            100,
        )?;
        let keys = bundle
            .names
            .iter()
            .map(|name| names::parse_name(name).map_err(|r| invalid(format!("name {name:?} {r}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let key = parse_certified_key(&bundle.chain_pem, &bundle.key_pem, Check::Strict)
            .map_err(invalid)?;
        let parsed = Parsed {
            key,
            source: bundle,
        };
        for name in keys {
            match name {
                NameKey::Exact(name) => self.certs.insert(name, parsed.clone()),
                NameKey::Wildcard(parent) => self.wildcard_certs.insert(parent, parsed.clone()),
            };
        }
        Ok(())
    }

    fn add_challenge(&mut self, challenge: &ChallengeAnswer) -> Result<(), TableError> {
        match challenge {
            ChallengeAnswer::Http01 {
                token,
                key_authorization,
            } => {
                let invalid = |reason: &str| TableError::InvalidChallenge {
                    id: token.clone(),
                    reason: reason.to_owned(),
                };
                names::check_token(token).map_err(|r| invalid(&format!("token {r}")))?;
                if !super::valid_key_authorization(key_authorization) {
                    return Err(invalid("key authorization must be printable ASCII"));
                }
                self.http01.insert(token.clone(), key_authorization.clone());
            }
            ChallengeAnswer::TlsAlpn01 {
                hostname,
                certificate_pem,
                key_pem,
            } => {
                let invalid = |reason: String| TableError::InvalidChallenge {
                    id: hostname.clone(),
                    reason,
                };
                let NameKey::Exact(name) = parse_hostname(hostname)? else {
                    return Err(invalid("TLS-ALPN-01 cannot validate a wildcard".to_owned()));
                };
                let key = parse_certified_key(certificate_pem, key_pem, Check::Challenge)
                    .map_err(invalid)?;
                let source = Arc::new(challenge.clone());
                self.tls_alpn01.insert(name, Parsed { key, source });
            }
            ChallengeAnswer::Unknown => self.unknown_changes_skipped += 1,
        }
        Ok(())
    }

    fn remove_challenge(&mut self, id: &ChallengeId) {
        match id {
            ChallengeId::Http01 { token } => {
                self.http01.remove(token);
            }
            ChallengeId::TlsAlpn01 { hostname } => {
                self.tls_alpn01.remove(hostname);
            }
            ChallengeId::Unknown => self.unknown_changes_skipped += 1,
        }
    }

    /// Recomputes what is derived from the rest: the default certificate
    /// and the certificate count.
    fn finish(&mut self) {
        self.default_cert = self
            .settings
            .default_certificate
            .as_deref()
            .and_then(|name| self.certificate_ref(&names::normalise(name)))
            .map(|p| Arc::clone(&p.key));
        self.certificate_count = self
            .certs
            .values()
            .chain(self.wildcard_certs.values())
            .map(|p| Arc::as_ptr(&p.key))
            .collect::<HashSet<_>>()
            .len();
    }
}

/// Most targets and redirect rules one host may have.
const MAX_TARGETS: usize = 64;
const MAX_REDIRECTS: usize = 8;

fn limit(what: impl FnOnce() -> String, size: usize, max: usize) -> Result<(), TableError> {
    if size > max {
        return Err(TableError::TooLarge {
            what: what(),
            size,
            max,
        });
    }
    Ok(())
}

/// Validates a host's name, targets and upstream SNI.
fn build_route(host: &HostConfig) -> Result<(NameKey, Arc<Route>), TableError> {
    let key = parse_hostname(&host.hostname)?;
    limit(
        || format!("targets of {}", host.hostname),
        host.targets.len(),
        MAX_TARGETS,
    )?;
    limit(
        || format!("redirects of {}", host.hostname),
        host.redirects.len(),
        MAX_REDIRECTS,
    )?;
    let targets = host
        .targets
        .iter()
        .map(|target| {
            names::parse_target(target).map_err(|reason| TableError::InvalidTarget {
                hostname: host.hostname.clone(),
                target: target.clone(),
                reason,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(sni) = &host.target_sni {
        names::check_sni(sni).map_err(|reason| TableError::InvalidTargetSni {
            hostname: host.hostname.clone(),
            sni: sni.clone(),
            reason,
        })?;
    }
    let route = Route {
        config: host.clone(),
        targets,
    };
    Ok((key, Arc::new(route)))
}

fn parse_hostname(hostname: &str) -> Result<NameKey, TableError> {
    names::parse_name(hostname).map_err(|reason| TableError::InvalidHostname {
        hostname: hostname.to_owned(),
        reason,
    })
}
