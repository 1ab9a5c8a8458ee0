//! Unit tests for [`super::diagnose`] and its helpers — pure, no network.
//!
//! This file holds the fixtures (a correctly set up host and apex, which
//! each test then breaks in one way) and the routing and ownership cases;
//! [`caa`] covers CAA, [`robustness`] failures, every combination of part
//! verdicts, hostile answers, serialization and the name helpers.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::observation::{bounded, caa_names, normalize_name};
use super::*;
use Reason::*;
use Verdict::{Ok as VOk, Unknown, Wrong};

mod caa;
mod robustness;

const HOST: &str = "shop.bobs.io";
const APEX: &str = "bobs.io";
const TARGET: &str = "edge.portico.test";
const TXT_NAME: &str = "_portico-challenge.shop.bobs.io";
const TOKEN: &str = "portico-verify=abc";
const EDGE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const EDGE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xe, 0, 0, 0, 0, 0x10);
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const ELSEWHERE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 1);

fn expected() -> Expected {
    Expected {
        hostname: HOST.to_owned(),
        is_apex: false,
        cname_target: Some(TARGET.to_owned()),
        a: vec![EDGE],
        aaaa: vec![EDGE6],
        txt_name: TXT_NAME.to_owned(),
        txt_value: TOKEN.to_owned(),
        ca_identities: vec!["letsencrypt.org".to_owned()],
    }
}

fn apex_expected() -> Expected {
    Expected {
        hostname: APEX.to_owned(),
        is_apex: true,
        cname_target: None,
        txt_name: format!("_portico-challenge.{APEX}"),
        ..expected()
    }
}

fn hop<T>(name: &str, answer: Answer<T>) -> Queried<T> {
    Queried::new(name, answer)
}

fn caa(tag: &str, value: &str) -> CaaRecord {
    CaaRecord {
        critical: false,
        tag: tag.to_owned(),
        value: value.to_owned(),
    }
}

/// A correctly set up non-apex host: CNAME to the target, right TXT, no CAA.
fn good() -> Observation {
    Observation {
        hostname: HOST.to_owned(),
        cname: vec![
            hop(HOST, Answer::Ok(vec![TARGET.to_owned()])),
            hop(TARGET, Answer::NoRecords),
        ],
        a: Answer::Ok(vec![EDGE]),
        aaaa: Answer::Ok(vec![EDGE6]),
        txt: hop(TXT_NAME, Answer::Ok(vec![TOKEN.to_owned()])),
        caa: vec![hop(HOST, Answer::NoRecords), hop(APEX, Answer::NoRecords)],
    }
}

/// A correctly set up apex: A records only.
fn good_apex() -> Observation {
    Observation {
        hostname: APEX.to_owned(),
        cname: vec![hop(APEX, Answer::NoRecords)],
        txt: hop(
            "_portico-challenge.bobs.io",
            Answer::Ok(vec![TOKEN.to_owned()]),
        ),
        caa: vec![hop(APEX, Answer::NoRecords)],
        ..good()
    }
}

/// `obs` routed by A records alone (no CNAME at the host).
fn by_a(mut obs: Observation, a: Answer<Ipv4Addr>) -> Observation {
    obs.cname = vec![hop(HOST, Answer::NoRecords)];
    obs.a = a;
    obs
}

fn check(obs: &Observation, exp: &Expected) -> Diagnosis {
    let d = diagnose(obs, exp);
    assert!(
        !d.hint.is_empty() && !d.hint.contains('\n'),
        "hint: {:?}",
        d.hint
    );
    assert_eq!(d.expected, exp.records());
    d
}

fn verdicts(d: &Diagnosis) -> (Verdict, Verdict, Verdict) {
    (d.verdict, d.routing, d.ownership)
}

#[test]
fn cname_ok_and_txt_ok_verify() {
    let d = check(&good(), &expected());
    assert_eq!(verdicts(&d), (VOk, VOk, VOk));
    assert_eq!(d.reasons, vec![CnameOk, TxtOk]);
    assert_eq!(d.hint, "DNS is set up correctly; nothing to change.");
    let cname = DnsRecord::new("CNAME", HOST, TARGET.to_owned());
    assert!(d.found.contains(&cname));
    assert!(
        d.found
            .contains(&DnsRecord::new("A", TARGET, EDGE.to_string()))
    );
    assert!(
        d.found
            .contains(&DnsRecord::new("TXT", TXT_NAME, TOKEN.to_owned()))
    );
}

#[test]
fn cname_ok_through_an_alias_ignoring_case_and_trailing_dots() {
    let mut obs = good();
    obs.cname = vec![
        hop(HOST, Answer::Ok(vec!["Alias.Bobs.IO.".to_owned()])),
        hop(
            "alias.bobs.io",
            Answer::Ok(vec!["EDGE.portico.test.".to_owned()]),
        ),
        hop(TARGET, Answer::NoRecords),
    ];
    let exp = Expected {
        cname_target: Some("Edge.Portico.Test.".to_owned()),
        ..expected()
    };
    assert_eq!(check(&obs, &exp).reasons, vec![CnameOk, TxtOk]);
}

#[test]
fn cname_ok_does_not_depend_on_address_lookups_behind_the_target() {
    let mut obs = good();
    obs.a = Answer::Timeout;
    obs.aaaa = Answer::Ok(vec![ELSEWHERE6]);
    let d = check(&obs, &expected());
    assert_eq!(verdicts(&d), (VOk, VOk, VOk));
}

#[test]
fn a_ok_verifies_an_apex() {
    let d = check(&good_apex(), &apex_expected());
    assert_eq!(verdicts(&d), (VOk, VOk, VOk));
    assert_eq!(d.reasons, vec![AOk, TxtOk]);
}

#[test]
fn a_ok_also_counts_for_a_subdomain_and_skips_a_failed_cname_lookup() {
    let mut obs = by_a(good(), Answer::Ok(vec![EDGE]));
    obs.cname = vec![hop(HOST, Answer::ServFail)];
    obs.aaaa = Answer::NoRecords;
    assert_eq!(check(&obs, &expected()).reasons, vec![AOk, TxtOk]);
}

#[test]
fn aaaa_elsewhere_makes_routing_wrong() {
    let mut obs = good_apex();
    obs.aaaa = Answer::Ok(vec![EDGE6, ELSEWHERE6]);
    let d = check(&obs, &apex_expected());
    assert_eq!(verdicts(&d), (Wrong, Wrong, VOk));
    assert_eq!(d.reasons, vec![AOk, AaaaElsewhere, TxtOk]);
    assert_eq!(
        d.hint,
        "Your AAAA record points to 2001:db8:bad::1; change it to 2001:db8:e::10."
    );
    let no_v6 = Expected {
        aaaa: Vec::new(),
        ..apex_expected()
    };
    assert!(check(&obs, &no_v6).hint.contains("remove it"));
}

#[test]
fn aaaa_timeout_leaves_a_ok_routing_unknown() {
    let mut obs = good_apex();
    obs.aaaa = Answer::Timeout;
    let d = check(&obs, &apex_expected());
    assert_eq!(verdicts(&d), (Unknown, Unknown, VOk));
    assert_eq!(d.reasons, vec![AOk, Timeout, TxtOk]);
}

#[test]
fn wrong_cname_target_names_the_actual_target() {
    let mut obs = good();
    obs.cname = vec![
        hop(HOST, Answer::Ok(vec!["x.herokudns.com.".to_owned()])),
        hop("x.herokudns.com", Answer::NoRecords),
    ];
    obs.a = Answer::Ok(vec![ELSEWHERE]);
    obs.aaaa = Answer::NoRecords;
    let d = check(&obs, &expected());
    assert_eq!(verdicts(&d), (Wrong, Wrong, VOk));
    assert_eq!(d.reasons, vec![WrongCnameTarget, TxtOk]);
    assert_eq!(
        d.hint,
        "Your CNAME points to x.herokudns.com; change it to edge.portico.test."
    );
    assert!(d.found.contains(&DnsRecord::new(
        "A",
        "x.herokudns.com",
        ELSEWHERE.to_string()
    )));
}

#[test]
fn cname_loops_and_dead_ends_are_wrong_targets() {
    let mut obs = good();
    obs.cname = vec![
        hop(HOST, Answer::Ok(vec!["a.bobs.io".to_owned()])),
        hop("a.bobs.io", Answer::Ok(vec![HOST.to_owned()])),
    ];
    obs.a = Answer::NoRecords;
    assert_eq!(
        check(&obs, &expected()).reasons,
        vec![WrongCnameTarget, TxtOk]
    );
    obs.a = Answer::NxDomain;
    assert_eq!(
        check(&obs, &expected()).reasons,
        vec![WrongCnameTarget, TxtOk]
    );
}

#[test]
fn a_cname_at_an_apex_is_explained_as_needing_a_records() {
    let mut obs = good_apex();
    obs.cname = vec![hop(APEX, Answer::Ok(vec!["x.herokudns.com".to_owned()]))];
    obs.a = Answer::Ok(vec![ELSEWHERE]);
    let d = check(&obs, &apex_expected());
    assert_eq!(d.reasons, vec![WrongCnameTarget, TxtOk]);
    assert!(d.hint.contains("A records 203.0.113.10"), "{}", d.hint);
}

#[test]
fn wrong_a_lists_only_the_stray_addresses() {
    let obs = by_a(good(), Answer::Ok(vec![EDGE, ELSEWHERE]));
    let d = check(&obs, &expected());
    assert_eq!(verdicts(&d), (Wrong, Wrong, VOk));
    assert_eq!(d.reasons, vec![WrongA, TxtOk]);
    assert_eq!(
        d.hint,
        "Your A record points to 198.51.100.7; replace it with a CNAME record shop.bobs.io pointing to edge.portico.test."
    );
    let mut apex = good_apex();
    apex.a = Answer::Ok(vec![ELSEWHERE]);
    apex.aaaa = Answer::Ok(vec![ELSEWHERE6]);
    let d = check(&apex, &apex_expected());
    assert_eq!(d.reasons, vec![WrongA, AaaaElsewhere, TxtOk]);
    assert_eq!(
        d.hint,
        "Your A record points to 198.51.100.7; change it to 203.0.113.10."
    );
}

#[test]
fn nxdomain_when_the_name_does_not_exist() {
    let mut obs = good();
    obs.cname = vec![hop(HOST, Answer::NxDomain)];
    obs.a = Answer::NxDomain;
    obs.aaaa = Answer::NxDomain;
    obs.txt.answer = Answer::NxDomain;
    let d = check(&obs, &expected());
    assert_eq!(verdicts(&d), (Wrong, Wrong, Wrong));
    assert_eq!(d.reasons, vec![Nxdomain, TxtMissing]);
    assert_eq!(
        d.hint,
        "shop.bobs.io does not exist in DNS; add a CNAME record shop.bobs.io pointing to edge.portico.test."
    );
    assert!(d.found.is_empty());
}

#[test]
fn no_records_when_the_name_exists_without_cname_or_a() {
    let mut obs = by_a(good(), Answer::NoRecords);
    obs.aaaa = Answer::Ok(Vec::new()); // an empty Ok means no records too
    let d = check(&obs, &expected());
    assert_eq!(d.reasons, vec![NoRecords, TxtOk]);
    assert!(d.hint.starts_with("shop.bobs.io has no CNAME or A record"));
    let mut apex = good_apex();
    apex.a = Answer::NoRecords;
    let hint = check(&apex, &apex_expected()).hint;
    assert!(hint.contains("A records 203.0.113.10 and AAAA records 2001:db8:e::10 for bobs.io"));
}

#[test]
fn txt_missing_tells_what_to_add() {
    for answer in [Answer::NoRecords, Answer::NxDomain, Answer::Ok(Vec::new())] {
        let mut obs = good();
        obs.txt.answer = answer;
        let d = check(&obs, &expected());
        assert_eq!(verdicts(&d), (Wrong, VOk, Wrong));
        assert_eq!(d.reasons, vec![CnameOk, TxtMissing]);
        assert_eq!(
            d.hint,
            "Add a TXT record _portico-challenge.shop.bobs.io with value portico-verify=abc."
        );
    }
}

#[test]
fn txt_mismatch_names_the_value_found() {
    let mut obs = good();
    obs.txt.answer = Answer::Ok(vec!["portico-verify=old".to_owned(), "v=spf1".to_owned()]);
    let d = check(&obs, &expected());
    assert_eq!(verdicts(&d), (Wrong, VOk, Wrong));
    assert_eq!(d.reasons, vec![CnameOk, TxtMismatch]);
    assert_eq!(
        d.hint,
        "Your TXT record _portico-challenge.shop.bobs.io has value \"portico-verify=old\"; change it to portico-verify=abc."
    );
}

#[test]
fn txt_ok_among_other_values_and_surrounding_whitespace() {
    let mut obs = good();
    obs.txt.answer = Answer::Ok(vec!["v=spf1".to_owned(), format!(" {TOKEN} ")]);
    assert_eq!(check(&obs, &expected()).reasons, vec![CnameOk, TxtOk]);
}
