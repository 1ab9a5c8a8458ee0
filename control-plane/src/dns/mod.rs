//! DNS verification of custom domains.
//!
//! A customer adds a hostname; Portico tells them which records to create
//! ([`Expected::records`]) and later checks what the world's resolvers say.
//! Checking happens in two steps so that the interesting part is testable
//! without a network:
//!
//! 1. [`DnsChecker::observe`] asks the resolvers everything the verdict could
//!    depend on (CNAME chain, A, AAAA, the ownership TXT name and CAA from the
//!    host up to its registrable domain) and records every answer — including
//!    failures — in an [`Observation`]. Answers are bounded (see
//!    [`MAX_RECORDS_PER_ANSWER`], [`MAX_VALUE_LEN`], [`MAX_CNAME_CHAIN`]).
//! 2. [`diagnose`] is a pure function from an [`Observation`] and the
//!    [`Expected`] records to a [`Diagnosis`]: an overall [`Verdict`], one for
//!    routing and one for ownership, machine-readable [`Reason`]s, the records
//!    found, the records expected and a one-line hint for the customer.
//!
//! A SERVFAIL or a timeout never yields [`Verdict::Wrong`]: when a lookup the
//! verdict depends on did not produce an answer, the verdict is
//! [`Verdict::Unknown`] and nothing about the domain should change.

mod diagnosis;
mod observation;
mod resolver;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use diagnosis::diagnose;
pub use observation::{
    Answer, CaaRecord, MAX_CAA_NAMES, MAX_CNAME_CHAIN, MAX_RECORDS_PER_ANSWER, MAX_VALUE_LEN,
    Observation, Queried,
};
pub use resolver::DnsChecker;

/// How to reach the resolvers used for verification.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    /// Resolvers to ask (UDP, falling back to TCP); empty means the system
    /// configuration (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Timeout of a single query attempt.
    pub timeout: Duration,
    /// Attempts per query (at least one is always made).
    pub attempts: usize,
}

/// What the customer's DNS should look like for one hostname.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The customer's hostname, e.g. `shop.bobs.io`.
    pub hostname: String,
    /// Whether the hostname is its own registrable domain (no CNAME possible).
    pub is_apex: bool,
    /// The platform target a non-apex host should CNAME to.
    pub cname_target: Option<String>,
    /// The platform's edge IPv4 addresses.
    pub a: Vec<Ipv4Addr>,
    /// The platform's edge IPv6 addresses.
    pub aaaa: Vec<Ipv6Addr>,
    /// Where the ownership TXT record lives, e.g. `_portico-challenge.shop.bobs.io`.
    pub txt_name: String,
    /// The ownership TXT value, e.g. `portico-verify=<token>`.
    pub txt_value: String,
    /// CA identities (CAA issuer domains) Portico obtains certificates from.
    pub ca_identities: Vec<String>,
}

impl Expected {
    /// The records the customer must create (what the API returns as
    /// `verification.records`): a CNAME for a non-apex host (A/AAAA records
    /// for an apex or when there is no CNAME target), then the ownership TXT.
    pub fn records(&self) -> Vec<DnsRecord> {
        let host = observation::normalize_name(&self.hostname);
        let mut records = Vec::new();
        match (&self.cname_target, self.is_apex) {
            (Some(target), false) => {
                records.push(DnsRecord::new(
                    "CNAME",
                    &host,
                    observation::normalize_name(target),
                ));
            }
            _ => {
                records.extend(
                    self.a
                        .iter()
                        .map(|ip| DnsRecord::new("A", &host, ip.to_string())),
                );
                records.extend(
                    self.aaaa
                        .iter()
                        .map(|ip| DnsRecord::new("AAAA", &host, ip.to_string())),
                );
            }
        }
        records.push(DnsRecord::new(
            "TXT",
            &observation::normalize_name(&self.txt_name),
            self.txt_value.clone(),
        ));
        records
    }
}

/// The explainable result of a DNS check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Diagnosis {
    /// Ok only if routing and ownership are Ok and no CAA record forbids
    /// issuance; Unknown if a lookup it depends on failed; Wrong otherwise.
    pub verdict: Verdict,
    /// Whether traffic for the hostname reaches the platform.
    pub routing: Verdict,
    /// Whether the ownership TXT record is in place.
    pub ownership: Verdict,
    /// Every finding, in the order routing, ownership, CAA; no duplicates.
    pub reasons: Vec<Reason>,
    /// The records the resolvers returned.
    pub found: Vec<DnsRecord>,
    /// The records the customer must create.
    pub expected: Vec<DnsRecord>,
    /// One line the customer can act on.
    pub hint: String,
}

/// The outcome of a check, or of one part of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Everything needed is in place.
    Ok,
    /// The resolvers answered, and the answer is not what it should be.
    Wrong,
    /// A needed lookup failed (SERVFAIL, timeout); retry later.
    Unknown,
}

/// A machine-readable finding of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The CNAME chain reaches the platform target.
    CnameOk,
    /// All A records are platform edge addresses.
    AOk,
    /// The ownership TXT record has the expected value.
    TxtOk,
    /// The hostname is a CNAME to something other than the platform target.
    WrongCnameTarget,
    /// The hostname has A records outside the platform's addresses.
    WrongA,
    /// The hostname has AAAA records outside the platform's addresses, so
    /// IPv6 clients would bypass the edge.
    AaaaElsewhere,
    /// The hostname does not exist.
    Nxdomain,
    /// The hostname exists but has neither a CNAME nor A records.
    NoRecords,
    /// There is no TXT record at the ownership name.
    TxtMissing,
    /// There are TXT records at the ownership name, none with the right value.
    TxtMismatch,
    /// CAA records forbid every configured CA from issuing.
    CaaForbids,
    /// A needed lookup failed with SERVFAIL (or another server error).
    Servfail,
    /// A needed lookup timed out.
    Timeout,
}

/// One DNS record, as shown to customers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DnsRecord {
    /// `CNAME`, `A`, `AAAA`, `TXT` or `CAA`.
    #[serde(rename = "type")]
    pub record_type: String,
    /// The owner name, lower case, without a trailing dot.
    pub name: String,
    /// The record data in presentation form.
    pub value: String,
}

impl DnsRecord {
    fn new(record_type: &str, name: &str, value: String) -> Self {
        Self {
            record_type: record_type.to_owned(),
            name: name.to_owned(),
            value,
        }
    }
}

/// Why a [`DnsChecker`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The system resolver configuration could not be read.
    #[error("cannot read the system resolver configuration: {0}")]
    SystemConfig(String),
    /// The resolver could not be constructed.
    #[error("cannot build the DNS resolver: {0}")]
    Resolver(String),
    /// The settings are unusable.
    #[error("invalid DNS settings: {0}")]
    Settings(&'static str),
}
