//! From an [`Observation`] to a [`Diagnosis`] — pure, no I/O.
//!
//! The check has three parts, each with its own verdict, reasons and hint:
//! routing (does traffic reach the edge?), ownership (is the TXT record
//! there?) and CAA (may one of our CAs issue?). A part is Unknown only when
//! a lookup it actually depends on failed: e.g. a timed-out AAAA lookup does
//! not matter once the CNAME chain is known to reach the platform target.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::observation::{Answer, CaaRecord, Observation, Queried, normalize_name};
use super::{Diagnosis, DnsRecord, Expected, Reason, Verdict};

/// At most this many records are listed in [`Diagnosis::found`].
const MAX_FOUND: usize = 64;

/// CAA property tags a CA is expected to understand (RFC 8659 and its
/// registry); an unknown tag marked critical forbids issuance.
const KNOWN_CAA_TAGS: &[&str] = &[
    "issue",
    "issuewild",
    "iodef",
    "contactemail",
    "contactphone",
    "issuemail",
    "issuevmc",
];

const RETRY: &str = "we will retry — nothing changes until we get an answer.";

/// Diagnose `obs` against `expected`. Pure: the same inputs always give the
/// same diagnosis.
pub fn diagnose(obs: &Observation, expected: &Expected) -> Diagnosis {
    let routing = routing(obs, expected);
    let ownership = ownership(obs, expected);
    let caa = caa(obs, expected);
    let parts = [&routing, &ownership, &caa];

    let verdict = if parts.iter().any(|p| p.verdict == Verdict::Unknown) {
        Verdict::Unknown
    } else if parts.iter().all(|p| p.verdict == Verdict::Ok) {
        Verdict::Ok
    } else {
        Verdict::Wrong
    };
    let mut reasons: Vec<Reason> = Vec::new();
    for reason in parts.iter().flat_map(|p| p.reasons.iter().copied()) {
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    }
    let hint = first_hint(&parts, Verdict::Wrong)
        .or_else(|| first_hint(&parts, Verdict::Unknown))
        .unwrap_or_else(|| "DNS is set up correctly; nothing to change.".to_owned());

    Diagnosis {
        verdict,
        routing: routing.verdict,
        ownership: ownership.verdict,
        reasons,
        found: found(obs),
        expected: expected.records(),
        hint,
    }
}

/// The verdict, reasons and hint of one part of the check.
struct Part {
    verdict: Verdict,
    reasons: Vec<Reason>,
    hint: Option<String>,
}

impl Part {
    fn ok(reasons: Vec<Reason>) -> Self {
        Self {
            verdict: Verdict::Ok,
            reasons,
            hint: None,
        }
    }

    fn wrong(reasons: Vec<Reason>, hint: String) -> Self {
        Self {
            verdict: Verdict::Wrong,
            reasons,
            hint: Some(hint),
        }
    }

    /// Unknown because of `failure`, keeping what was already found.
    fn unknown(mut reasons: Vec<Reason>, failure: Failure) -> Self {
        reasons.push(failure.reason);
        Self {
            verdict: Verdict::Unknown,
            reasons,
            hint: Some(failure.hint),
        }
    }
}

fn first_hint(parts: &[&Part], verdict: Verdict) -> Option<String> {
    parts
        .iter()
        .find(|p| p.verdict == verdict)
        .and_then(|p| p.hint.clone())
}

/// Routing: the CNAME chain reaches the target, or all A records are edge
/// addresses (with no AAAA record elsewhere).
fn routing(obs: &Observation, exp: &Expected) -> Part {
    let host = normalize_name(&exp.hostname);
    let target = exp.cname_target.as_deref().map(normalize_name);
    let chain: Vec<String> = obs.cname_targets().map(normalize_name).collect();
    if target
        .as_deref()
        .is_some_and(|t| chain.iter().any(|hop| hop == t))
    {
        // AAAA answers behind the platform target are the platform's own.
        return Part::ok(vec![Reason::CnameOk]);
    }

    let stray_aaaa: Vec<Ipv6Addr> = obs
        .aaaa
        .records()
        .unwrap_or_default()
        .iter()
        .filter(|ip| !exp.aaaa.contains(ip))
        .copied()
        .collect();
    let a = obs.a.records();
    if a.is_some_and(|a| a.iter().all(|ip| exp.a.contains(ip))) {
        if !stray_aaaa.is_empty() {
            let hint = aaaa_hint(&stray_aaaa, exp);
            return Part::wrong(vec![Reason::AOk, Reason::AaaaElsewhere], hint);
        }
        if let Some(failure) = Failure::of(&obs.aaaa, &host) {
            return Part::unknown(vec![Reason::AOk], failure);
        }
        return Part::ok(vec![Reason::AOk]);
    }

    let chain_failure = obs
        .cname
        .iter()
        .find_map(|hop| Failure::of(&hop.answer, &hop.name));
    if let Some(failure) = chain_failure.or_else(|| Failure::of(&obs.a, &host)) {
        return Part::unknown(Vec::new(), failure);
    }

    let (reason, hint) = if let Some(first) = chain.first() {
        let hint = match &target {
            Some(target) => format!("Your CNAME points to {first}; change it to {target}."),
            None => format!(
                "{host} is a CNAME to {first}; replace it with {}.",
                address_records(exp)
            ),
        };
        (Reason::WrongCnameTarget, hint)
    } else if let Some(a) = a {
        let stray: Vec<Ipv4Addr> = a.iter().filter(|ip| !exp.a.contains(ip)).copied().collect();
        let hint = match (&target, exp.is_apex) {
            (Some(target), false) => format!(
                "Your A record points to {}; replace it with a CNAME record {host} pointing to {target}.",
                join(&stray)
            ),
            _ => format!(
                "Your A record points to {}; change it to {}.",
                join(&stray),
                join(&exp.a)
            ),
        };
        (Reason::WrongA, hint)
    } else if is_nxdomain(obs) {
        let hint = format!(
            "{host} does not exist in DNS; add {}.",
            routing_records(exp, &host)
        );
        (Reason::Nxdomain, hint)
    } else {
        let hint = format!(
            "{host} has no CNAME or A record; add {}.",
            routing_records(exp, &host)
        );
        (Reason::NoRecords, hint)
    };
    let mut reasons = vec![reason];
    if !stray_aaaa.is_empty() {
        reasons.push(Reason::AaaaElsewhere);
    }
    Part::wrong(reasons, hint)
}

fn is_nxdomain(obs: &Observation) -> bool {
    let cname_nx = obs
        .cname
        .first()
        .is_some_and(|hop| hop.answer == Answer::NxDomain);
    cname_nx || obs.a == Answer::NxDomain
}

/// The routing records the customer should create, as prose.
fn routing_records(exp: &Expected, host: &str) -> String {
    match (&exp.cname_target, exp.is_apex) {
        (Some(target), false) => format!(
            "a CNAME record {host} pointing to {}",
            normalize_name(target)
        ),
        _ => format!("{} for {host}", address_records(exp)),
    }
}

fn address_records(exp: &Expected) -> String {
    let mut text = format!("A records {}", join(&exp.a));
    if !exp.aaaa.is_empty() {
        text.push_str(&format!(" and AAAA records {}", join(&exp.aaaa)));
    }
    text
}

fn aaaa_hint(stray: &[Ipv6Addr], exp: &Expected) -> String {
    if exp.aaaa.is_empty() {
        format!(
            "Your AAAA record points to {}; remove it — IPv6 visitors would bypass Portico.",
            join(stray)
        )
    } else {
        format!(
            "Your AAAA record points to {}; change it to {}.",
            join(stray),
            join(&exp.aaaa)
        )
    }
}

/// Ownership: a TXT record at the challenge name with the expected value.
fn ownership(obs: &Observation, exp: &Expected) -> Part {
    let name = normalize_name(&exp.txt_name);
    let wanted = exp.txt_value.trim();
    if let Some(values) = obs.txt.answer.records() {
        if values.iter().any(|v| v.trim() == wanted) {
            return Part::ok(vec![Reason::TxtOk]);
        }
        let seen = values.first().map(String::as_str).unwrap_or_default();
        let hint = format!("Your TXT record {name} has value \"{seen}\"; change it to {wanted}.");
        return Part::wrong(vec![Reason::TxtMismatch], hint);
    }
    if let Some(failure) = Failure::of(&obs.txt.answer, &name) {
        return Part::unknown(Vec::new(), failure);
    }
    let hint = format!("Add a TXT record {name} with value {wanted}.");
    Part::wrong(vec![Reason::TxtMissing], hint)
}

/// CAA: the first name (from the host upwards) with CAA records decides;
/// without CA identities configured there is nothing to check.
fn caa(obs: &Observation, exp: &Expected) -> Part {
    if exp.ca_identities.is_empty() {
        return Part::ok(Vec::new());
    }
    for queried in &obs.caa {
        if let Some(failure) = Failure::of(&queried.answer, &queried.name) {
            return Part::unknown(Vec::new(), failure);
        }
        if let Some(records) = queried.answer.records() {
            return match caa_refusal(records, &exp.ca_identities) {
                None => Part::ok(Vec::new()),
                Some(why) => {
                    let hint = format!(
                        "The CAA records on {} {why}; add a CAA record {} CAA 0 issue \"{}\".",
                        queried.name,
                        queried.name,
                        exp.ca_identities
                            .first()
                            .map(|id| normalize_name(id))
                            .unwrap_or_default(),
                    );
                    Part::wrong(vec![Reason::CaaForbids], hint)
                }
            };
        }
    }
    Part::ok(Vec::new())
}

/// Why `records` forbid all of `identities` from issuing, if they do.
fn caa_refusal(records: &[CaaRecord], identities: &[String]) -> Option<String> {
    if let Some(unknown) = records
        .iter()
        .find(|r| r.critical && !KNOWN_CAA_TAGS.contains(&r.tag.to_ascii_lowercase().as_str()))
    {
        return Some(format!(
            "include a critical record with unknown tag {}, which forbids issuance",
            unknown.tag
        ));
    }
    let issuers: Vec<String> = records
        .iter()
        .filter(|r| r.tag.eq_ignore_ascii_case("issue"))
        .map(|r| normalize_name(r.value.split(';').next().unwrap_or_default()))
        .collect();
    let allowed = issuers.is_empty()
        || identities
            .iter()
            .any(|id| issuers.contains(&normalize_name(id)));
    if allowed {
        None
    } else {
        let names: Vec<String> = identities.iter().map(|id| normalize_name(id)).collect();
        Some(format!(
            "do not allow {} to issue certificates",
            names.join(" or ")
        ))
    }
}

/// A failed lookup a verdict depended on.
struct Failure {
    reason: Reason,
    hint: String,
}

impl Failure {
    fn of<T>(answer: &Answer<T>, name: &str) -> Option<Self> {
        let (reason, hint) = match answer {
            Answer::Timeout => (Reason::Timeout, format!("DNS lookup timed out; {RETRY}")),
            Answer::ServFail => (
                Reason::Servfail,
                format!("DNS lookup for {name} failed (SERVFAIL); {RETRY}"),
            ),
            Answer::Other(error) => (
                Reason::Servfail,
                format!("DNS lookup for {name} failed ({error}); {RETRY}"),
            ),
            Answer::Ok(_) | Answer::NxDomain | Answer::NoRecords => return None,
        };
        Some(Self { reason, hint })
    }
}

/// Every record the resolvers returned, at most [`MAX_FOUND`].
fn found(obs: &Observation) -> Vec<DnsRecord> {
    let mut found = Vec::new();
    for hop in &obs.cname {
        push_all(&mut found, "CNAME", hop, String::clone);
    }
    let end = obs
        .cname_targets()
        .last()
        .unwrap_or(obs.hostname.as_str())
        .to_owned();
    push_all(
        &mut found,
        "A",
        &Queried::new(&end, obs.a.clone()),
        ToString::to_string,
    );
    push_all(
        &mut found,
        "AAAA",
        &Queried::new(&end, obs.aaaa.clone()),
        ToString::to_string,
    );
    push_all(&mut found, "TXT", &obs.txt, String::clone);
    for queried in &obs.caa {
        push_all(&mut found, "CAA", queried, |r| {
            let flags = if r.critical { 128 } else { 0 };
            format!("{flags} {} \"{}\"", r.tag, r.value)
        });
    }
    found.truncate(MAX_FOUND);
    found
}

fn push_all<T>(
    found: &mut Vec<DnsRecord>,
    record_type: &str,
    queried: &Queried<T>,
    value: impl Fn(&T) -> String,
) {
    for record in queried.answer.records().unwrap_or_default() {
        if found.len() < MAX_FOUND {
            found.push(DnsRecord::new(record_type, &queried.name, value(record)));
        }
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        return "(none configured)".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
