//! CAA: which name decides, what forbids issuance, failures.

use super::*;

fn with_caa(sets: Vec<(&str, Answer<CaaRecord>)>) -> Diagnosis {
    let mut obs = good();
    obs.caa = sets.into_iter().map(|(n, a)| hop(n, a)).collect();
    check(&obs, &expected())
}

#[test]
fn caa_forbids_when_no_issue_record_allows_our_ca() {
    let d = with_caa(vec![
        (HOST, Answer::NoRecords),
        (
            APEX,
            Answer::Ok(vec![
                caa("issue", "digicert.com"),
                caa("iodef", "mailto:x@y"),
            ]),
        ),
    ]);
    assert_eq!(verdicts(&d), (Wrong, VOk, VOk));
    assert_eq!(d.reasons, vec![CnameOk, TxtOk, CaaForbids]);
    assert_eq!(
        d.hint,
        "The CAA records on bobs.io do not allow letsencrypt.org to issue certificates; add a CAA record bobs.io CAA 0 issue \"letsencrypt.org\"."
    );
    assert!(d.found.contains(&DnsRecord::new(
        "CAA",
        APEX,
        "0 issue \"digicert.com\"".to_owned()
    )));
    let forbid_all = with_caa(vec![(HOST, Answer::Ok(vec![caa("issue", ";")]))]);
    assert_eq!(forbid_all.reasons, vec![CnameOk, TxtOk, CaaForbids]);
}

#[test]
fn caa_the_closest_name_with_records_decides() {
    let ours = || {
        Answer::Ok(vec![caa(
            "issue",
            "LetsEncrypt.org.; accounturi=https://x/1",
        )])
    };
    let theirs = || Answer::Ok(vec![caa("issue", "digicert.com")]);
    assert_eq!(
        with_caa(vec![(HOST, ours()), (APEX, theirs())]).verdict,
        VOk
    );
    assert_eq!(
        with_caa(vec![(HOST, theirs()), (APEX, ours())]).verdict,
        Wrong
    );
    // Not needed once the host answered, so a failure further up is ignored.
    assert_eq!(
        with_caa(vec![(HOST, ours()), (APEX, Answer::Timeout)]).verdict,
        VOk
    );
}

#[test]
fn caa_without_issue_records_or_identities_allows() {
    let wild_only = Answer::Ok(vec![caa("issuewild", "digicert.com")]);
    assert_eq!(with_caa(vec![(APEX, wild_only.clone())]).verdict, VOk);
    let mut obs = good();
    obs.caa = vec![hop(APEX, Answer::Ok(vec![caa("issue", "digicert.com")]))];
    let exp = Expected {
        ca_identities: Vec::new(),
        ..expected()
    };
    assert_eq!(check(&obs, &exp).verdict, VOk);
}

#[test]
fn caa_unknown_critical_tag_forbids() {
    let critical = CaaRecord {
        critical: true,
        ..caa("tbs", "x")
    };
    let d = with_caa(vec![(
        APEX,
        Answer::Ok(vec![caa("issue", "letsencrypt.org"), critical]),
    )]);
    assert_eq!(d.reasons, vec![CnameOk, TxtOk, CaaForbids]);
    assert!(d.hint.contains("unknown tag tbs"), "{}", d.hint);
    assert!(d.found.iter().any(|r| r.value == "128 tbs \"x\""));
}

#[test]
fn caa_failure_is_unknown() {
    let d = with_caa(vec![(HOST, Answer::NoRecords), (APEX, Answer::ServFail)]);
    assert_eq!(verdicts(&d), (Unknown, VOk, VOk));
    assert_eq!(d.reasons, vec![CnameOk, TxtOk, Servfail]);
    assert_eq!(
        d.hint,
        "DNS lookup for bobs.io failed (SERVFAIL); we will retry — nothing changes until we get an answer."
    );
}
