//! What the resolvers answered, query by query, and the bounds applied to it.
//!
//! An [`Observation`] is plain data: [`super::DnsChecker::observe`] fills it
//! from the network, unit tests build it by hand, and [`super::diagnose`]
//! reads it. Every answer is either records or the reason there are none.

use std::net::{Ipv4Addr, Ipv6Addr};

/// At most this many records are kept from one answer.
pub const MAX_RECORDS_PER_ANSWER: usize = 32;
/// Record values (and names) are cut to this many characters.
pub const MAX_VALUE_LEN: usize = 255;
/// At most this many CNAME hops are followed from the hostname.
pub const MAX_CNAME_CHAIN: usize = 8;
/// At most this many names are asked for CAA (the host and its parents).
pub const MAX_CAA_NAMES: usize = 8;

/// The answer to one query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer<T> {
    /// Records of the asked type (an empty list means the same as `NoRecords`).
    Ok(Vec<T>),
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The name exists but has no records of the asked type (NOERROR, no data).
    NoRecords,
    /// The server failed (SERVFAIL).
    ServFail,
    /// No answer arrived in time.
    Timeout,
    /// Any other failure (REFUSED, I/O error, unparsable name, ...).
    Other(String),
}

impl<T> Answer<T> {
    /// The records, if the answer had any.
    pub fn records(&self) -> Option<&[T]> {
        match self {
            Self::Ok(records) if !records.is_empty() => Some(records),
            _ => None,
        }
    }
}

/// One query: the name asked and what came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queried<T> {
    /// The name asked, normalized (lower case, no trailing dot).
    pub name: String,
    /// The answer.
    pub answer: Answer<T>,
}

impl<T> Queried<T> {
    /// A query for `name` (normalized here) and its answer.
    pub fn new(name: &str, answer: Answer<T>) -> Self {
        Self {
            name: normalize_name(name),
            answer,
        }
    }
}

/// One CAA record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaaRecord {
    /// The issuer-critical flag.
    pub critical: bool,
    /// The property tag, e.g. `issue`.
    pub tag: String,
    /// The property value, e.g. `letsencrypt.org; accounturi=...`.
    pub value: String,
}

/// Everything the resolvers answered for one hostname.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The hostname checked, normalized.
    pub hostname: String,
    /// CNAME queries in chain order: the hostname first, then each target
    /// that was followed (at most [`MAX_CNAME_CHAIN`] queries). Each `Ok`
    /// holds the CNAME targets (normalized) owned by the name asked.
    pub cname: Vec<Queried<String>>,
    /// A records for the hostname (the resolver follows CNAMEs).
    pub a: Answer<Ipv4Addr>,
    /// AAAA records for the hostname (the resolver follows CNAMEs).
    pub aaaa: Answer<Ipv6Addr>,
    /// TXT records at the ownership name, each value the concatenation of
    /// its character strings.
    pub txt: Queried<String>,
    /// CAA queries from the hostname up to its registrable domain, in that
    /// order.
    pub caa: Vec<Queried<CaaRecord>>,
}

impl Observation {
    /// The targets of the CNAME chain, in order, as far as it was answered.
    pub fn cname_targets(&self) -> impl Iterator<Item = &str> {
        self.cname
            .iter()
            .map_while(|hop| hop.answer.records().and_then(<[String]>::first))
            .map(String::as_str)
    }
}

/// A DNS name compared the way DNS does: lower case, no trailing dot,
/// surrounding whitespace ignored, bounded in length.
pub fn normalize_name(name: &str) -> String {
    bounded(&name.trim().trim_end_matches('.').to_ascii_lowercase())
}

/// `value` cut to [`MAX_VALUE_LEN`] characters, control characters replaced,
/// so that hostile answers cannot bloat or break what we store and show.
pub fn bounded(value: &str) -> String {
    value
        .chars()
        .take(MAX_VALUE_LEN)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// The names to ask for CAA: `hostname`, then each parent down to
/// `registrable_domain` (just `hostname` if it is not under it). Of a very
/// deep hostname only the host and the [`MAX_CAA_NAMES`]` - 1` names nearest
/// the registrable domain are kept.
pub fn caa_names(hostname: &str, registrable_domain: &str) -> Vec<String> {
    let host = normalize_name(hostname);
    let base = normalize_name(registrable_domain);
    let mut parents = Vec::new();
    if !base.is_empty() && host.ends_with(&format!(".{base}")) {
        let mut current = host.as_str();
        while let Some((_, parent)) = current.split_once('.') {
            parents.push(parent.to_owned());
            if parent == base {
                break;
            }
            current = parent;
        }
    }
    let skip = parents.len().saturating_sub(MAX_CAA_NAMES - 1);
    std::iter::once(host)
        .chain(parents.into_iter().skip(skip))
        .collect()
}
