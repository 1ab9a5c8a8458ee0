//! Failures that must never read as Wrong, every combination of part
//! verdicts, hostile answers, serialization and the name helpers.

use super::*;

#[test]
fn servfail_and_timeout_are_unknown() {
    let mut obs = by_a(good(), Answer::ServFail);
    obs.cname = vec![hop(HOST, Answer::ServFail)];
    let d = check(&obs, &expected());
    assert_eq!(verdicts(&d), (Unknown, Unknown, VOk));
    assert_eq!(d.reasons, vec![Servfail, TxtOk]);

    obs.cname = vec![hop(HOST, Answer::Timeout)];
    obs.a = Answer::Timeout;
    let d = check(&obs, &expected());
    assert_eq!(d.reasons, vec![Timeout, TxtOk]);
    assert_eq!(
        d.hint,
        "DNS lookup timed out; we will retry — nothing changes until we get an answer."
    );

    obs.cname = vec![hop(HOST, Answer::NoRecords)];
    obs.a = Answer::Other("io error: connection refused".to_owned());
    let d = check(&obs, &expected());
    assert_eq!(d.reasons, vec![Servfail, TxtOk]);
    assert!(d.hint.contains("connection refused"), "{}", d.hint);

    let mut obs = good();
    obs.txt.answer = Answer::Timeout;
    let d = check(&obs, &expected());
    assert_eq!(verdicts(&d), (Unknown, VOk, Unknown));
    assert_eq!(d.reasons, vec![CnameOk, Timeout]);
}

#[test]
fn a_failure_further_down_the_chain_is_unknown_not_wrong() {
    let mut obs = good();
    obs.cname = vec![
        hop(HOST, Answer::Ok(vec!["x.herokudns.com".to_owned()])),
        hop("x.herokudns.com", Answer::Timeout),
    ];
    obs.a = Answer::Timeout;
    let d = check(&obs, &expected());
    assert_eq!(d.routing, Unknown);
    assert_eq!(d.reasons, vec![Timeout, TxtOk]);
}

fn failures<T>() -> Vec<Answer<T>> {
    vec![
        Answer::ServFail,
        Answer::Timeout,
        Answer::Other("refused".to_owned()),
    ]
}

#[test]
fn a_single_failed_lookup_never_yields_wrong() {
    for (base, exp) in [(good(), expected()), (good_apex(), apex_expected())] {
        let mut variants = Vec::new();
        for i in 0..3 {
            let mut o = base.clone();
            o.a = failures().swap_remove(i);
            variants.push(o);
            let mut o = base.clone();
            o.aaaa = failures().swap_remove(i);
            variants.push(o);
            let mut o = base.clone();
            o.txt.answer = failures().swap_remove(i);
            variants.push(o);
            for hop in 0..base.cname.len() {
                let mut o = base.clone();
                o.cname[hop].answer = failures().swap_remove(i);
                o.cname.truncate(hop + 1);
                variants.push(o);
            }
            for name in 0..base.caa.len() {
                let mut o = base.clone();
                o.caa[name].answer = failures().swap_remove(i);
                variants.push(o);
            }
        }
        for obs in variants {
            let d = check(&obs, &exp);
            assert_ne!(d.verdict, Wrong, "{obs:?} gave {d:?}");
            assert!(
                d.routing != Wrong && d.ownership != Wrong,
                "{obs:?} gave {d:?}"
            );
        }
    }
}

#[test]
fn every_combination_of_part_verdicts() {
    let routings = [
        (VOk, good().cname),
        (
            Wrong,
            vec![hop(HOST, Answer::Ok(vec!["x.herokudns.com".to_owned()]))],
        ),
        (Unknown, vec![hop(HOST, Answer::Timeout)]),
    ];
    let ownerships = [
        (VOk, Answer::Ok(vec![TOKEN.to_owned()])),
        (Wrong, Answer::NoRecords),
        (Unknown, Answer::ServFail),
    ];
    let caas = [
        (VOk, Answer::NoRecords),
        (Wrong, Answer::Ok(vec![caa("issue", "digicert.com")])),
        (Unknown, Answer::Timeout),
    ];
    for (routing, cname) in &routings {
        for (ownership, txt) in &ownerships {
            for (caa_verdict, caa_answer) in &caas {
                let mut obs = good();
                obs.cname = cname.clone();
                obs.a = match routing {
                    Unknown => Answer::Timeout,
                    _ => Answer::NoRecords,
                };
                obs.txt.answer = txt.clone();
                obs.caa = vec![hop(APEX, caa_answer.clone())];
                let d = check(&obs, &expected());
                let parts = [*routing, *ownership, *caa_verdict];
                let overall = if parts.contains(&Unknown) {
                    Unknown
                } else if parts.iter().all(|v| *v == VOk) {
                    VOk
                } else {
                    Wrong
                };
                assert_eq!(verdicts(&d), (overall, *routing, *ownership), "{parts:?}");
                assert_eq!(d.reasons.contains(&CaaForbids), *caa_verdict == Wrong);
                if parts.contains(&Wrong) {
                    assert!(!d.hint.contains("we will retry"), "{parts:?}: {}", d.hint);
                }
            }
        }
    }
}

#[test]
fn hostile_answers_are_bounded_and_never_panic() {
    let long = format!("{}\n\u{0}{}", "x".repeat(300), "é".repeat(300));
    let mut obs = good();
    obs.cname = vec![hop(HOST, Answer::Ok(vec![long.clone(); 1000]))];
    obs.a = Answer::Ok(vec![ELSEWHERE; 1000]);
    obs.aaaa = Answer::Ok(vec![ELSEWHERE6; 1000]);
    obs.txt.answer = Answer::Ok(vec![long.clone(); 1000]);
    obs.caa = vec![hop(APEX, Answer::Ok(vec![caa(&long, &long); 1000]))];
    let d = check(&obs, &expected());
    assert_eq!(d.verdict, Wrong);
    assert!(d.found.len() <= 64);
    assert!(d.hint.chars().count() < 3 * MAX_VALUE_LEN);
    let empty = Observation {
        hostname: String::new(),
        cname: Vec::new(),
        a: Answer::NoRecords,
        aaaa: Answer::NoRecords,
        txt: hop("", Answer::NoRecords),
        caa: Vec::new(),
    };
    assert_eq!(
        check(&empty, &expected()).reasons,
        vec![NoRecords, TxtMissing]
    );
}

#[test]
fn expected_records_for_subdomains_and_apexes() {
    let record = |t: &str, n: &str, v: &str| DnsRecord::new(t, n, v.to_owned());
    assert_eq!(
        expected().records(),
        vec![
            record("CNAME", HOST, TARGET),
            record("TXT", TXT_NAME, TOKEN)
        ]
    );
    assert_eq!(
        apex_expected().records(),
        vec![
            record("A", APEX, "203.0.113.10"),
            record("AAAA", APEX, "2001:db8:e::10"),
            record("TXT", "_portico-challenge.bobs.io", TOKEN),
        ]
    );
}

#[test]
fn diagnosis_serializes_in_snake_case_with_a_type_field() -> Result<(), serde_json::Error> {
    let json = serde_json::to_value(check(&good(), &expected()))?;
    assert_eq!(json["verdict"], "ok");
    assert_eq!(json["reasons"], serde_json::json!(["cname_ok", "txt_ok"]));
    assert_eq!(json["expected"][0]["type"], "CNAME");
    let wrong = serde_json::to_value([WrongCnameTarget, AaaaElsewhere, Nxdomain, CaaForbids])?;
    let expected = [
        "wrong_cname_target",
        "aaaa_elsewhere",
        "nxdomain",
        "caa_forbids",
    ];
    assert_eq!(wrong, serde_json::json!(expected));
    let back: Diagnosis = serde_json::from_value(json)?;
    assert_eq!(back.reasons, vec![CnameOk, TxtOk]);
    Ok(())
}

#[test]
fn caa_names_climb_to_the_registrable_domain() {
    assert_eq!(caa_names("Shop.Bobs.IO.", "bobs.io"), vec![HOST, APEX]);
    assert_eq!(caa_names(APEX, APEX), vec![APEX]);
    assert_eq!(caa_names("shop.other.io", APEX), vec!["shop.other.io"]);
    assert_eq!(caa_names("xbobs.io", APEX), vec!["xbobs.io"]);
    let deep = format!("{}bobs.io", "a.".repeat(20));
    let names = caa_names(&deep, APEX);
    assert_eq!(names.len(), MAX_CAA_NAMES);
    assert_eq!(names.first(), Some(&deep));
    assert_eq!(names.last().map(String::as_str), Some(APEX));
}

#[test]
fn names_and_values_are_normalized_and_bounded() {
    assert_eq!(normalize_name("  Edge.Portico.Test. "), TARGET);
    let cut = bounded(&"é".repeat(MAX_VALUE_LEN + 10));
    assert_eq!(cut.chars().count(), MAX_VALUE_LEN);
    assert_eq!(bounded("a\nb"), "a\u{fffd}b");
}
