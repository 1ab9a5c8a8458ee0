//! Unit tests of the classifier on real-shaped problem documents.

use super::*;

fn ctx() -> Context {
    Context {
        challenge: ChallengeKind::Http01,
        last: None,
        now: DateTime::from_timestamp(1_735_747_200, 0).unwrap(), // 2025-01-01 16:00:00 UTC
    }
}

fn problem(json: &str) -> Problem {
    serde_json::from_str(json).unwrap()
}

fn api(json: &str, ctx: &Context) -> Error {
    classify(instant_acme::Error::Api(problem(json)), ctx)
}

#[test]
fn rate_limits_use_the_header_first() {
    let mut ctx = ctx();
    ctx.last = Some(ResponseMeta {
        status: 429,
        retry_after: Some(Duration::from_secs(90)),
    });
    let err = api(
        r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new orders","status":429}"#,
        &ctx,
    );
    assert!(
        matches!(err, Error::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(90))
    );
    assert_eq!(err.retry_delay(), Some(Duration::from_secs(90)));
}

#[test]
fn rate_limits_fall_back_to_the_time_in_the_detail() {
    let err = api(
        r#"{"type":"urn:ietf:params:acme:error:rateLimited","status":429,
            "detail":"too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2025-01-01 19:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/"}"#,
        &ctx(),
    );
    assert!(
        matches!(err, Error::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(3 * 3600)),
        "{err:?}"
    );
    let bare = api(
        r#"{"type":"urn:ietf:params:acme:error:rateLimited"}"#,
        &ctx(),
    );
    assert!(matches!(
        bare,
        Error::RateLimited {
            retry_after: None,
            ..
        }
    ));
}

#[test]
fn bad_nonce_and_server_errors_are_transient() {
    for kind in ["badNonce", "serverInternal", "orderNotReady"] {
        let json = format!(r#"{{"type":"urn:ietf:params:acme:error:{kind}","detail":"x"}}"#);
        let err = api(&json, &ctx());
        assert!(matches!(err, Error::Transient { .. }), "{kind}: {err:?}");
        assert!(err.is_retryable());
    }
    let unknown = api(r#"{"type":"about:blank","status":502}"#, &ctx());
    assert!(matches!(unknown, Error::Transient { .. }));
}

#[test]
fn maintenance_is_unavailable() {
    let mut ctx = ctx();
    ctx.last = Some(ResponseMeta {
        status: 503,
        retry_after: Some(Duration::from_secs(600)),
    });
    let err = api(
        r#"{"type":"urn:ietf:params:acme:error:serverInternal","detail":"The service is down for maintenance","status":503}"#,
        &ctx,
    );
    assert!(
        matches!(err, Error::Unavailable { retry_after: Some(d), .. } if d == Duration::from_secs(600))
    );
}

#[test]
fn caa_is_its_own_verdict() {
    let err = api(
        r#"{"type":"urn:ietf:params:acme:error:caa","detail":"CAA record for a.example prevents issuance",
            "subproblems":[{"type":"urn:ietf:params:acme:error:caa","detail":"no",
                            "identifier":{"type":"dns","value":"a.example"}}]}"#,
        &ctx(),
    );
    assert!(matches!(&err, Error::CaaForbids { name: Some(n), .. } if n == "a.example"));
    assert!(!err.is_retryable());
}

#[test]
fn validation_problems_name_the_challenge() {
    for kind in ["connection", "dns", "incorrectResponse", "tls"] {
        let json = format!(r#"{{"type":"urn:ietf:params:acme:error:{kind}","detail":"seen"}}"#);
        let err = api(&json, &ctx());
        assert!(
            matches!(&err, Error::ValidationFailed { challenge: ChallengeKind::Http01, detail, .. } if detail == "seen"),
            "{kind}: {err:?}"
        );
    }
}

#[test]
fn problems_on_a_challenge_are_validation_failures_except_caa() {
    let unauthorized = problem(
        r#"{"type":"urn:ietf:params:acme:error:unauthorized",
            "detail":"Invalid response from http://a.example/.well-known/acme-challenge/x: 404"}"#,
    );
    let err = classify_validation(&unauthorized, ChallengeKind::TlsAlpn01, "a.example");
    assert!(matches!(
        &err,
        Error::ValidationFailed { challenge: ChallengeKind::TlsAlpn01, name: Some(n), problem_type: Some(t), detail }
            if n == "a.example" && t.ends_with(":unauthorized") && detail.contains("404")
    ));
    let caa = problem(r#"{"type":"urn:ietf:params:acme:error:caa","detail":"no"}"#);
    let err = classify_validation(&caa, ChallengeKind::Http01, "a.example");
    assert!(matches!(err, Error::CaaForbids { .. }));
}

#[test]
fn account_problems() {
    for kind in [
        "unauthorized",
        "accountDoesNotExist",
        "externalAccountRequired",
        "userActionRequired",
        "invalidContact",
    ] {
        let json = format!(r#"{{"type":"urn:ietf:params:acme:error:{kind}","detail":"x"}}"#);
        let err = api(&json, &ctx());
        assert!(matches!(err, Error::Account { .. }), "{kind}: {err:?}");
        assert!(!err.is_retryable());
    }
}

#[test]
fn other_problems_are_rejections_with_the_cas_words() {
    let err = api(
        r#"{"type":"urn:ietf:params:acme:error:rejectedIdentifier","status":400,
            "detail":"Some identifiers were rejected",
            "subproblems":[{"type":"urn:ietf:params:acme:error:rejectedIdentifier",
                            "detail":"blocked","identifier":{"type":"dns","value":"b.example"}}]}"#,
        &ctx(),
    );
    assert!(
        matches!(&err, Error::Rejected { problem_type: Some(t), detail } if t.ends_with("rejectedIdentifier") && detail.contains("b.example: blocked")),
        "{err:?}"
    );
    let malformed = api(
        r#"{"type":"urn:ietf:params:acme:error:malformed","status":400}"#,
        &ctx(),
    );
    assert!(matches!(malformed, Error::Rejected { .. }));
}

#[test]
fn compound_reports_the_problem_a_retry_will_not_cure() {
    let err = api(
        r#"{"type":"urn:ietf:params:acme:error:compound","detail":"several",
            "subproblems":[
              {"type":"urn:ietf:params:acme:error:connection","detail":"timeout","identifier":{"type":"dns","value":"a.example"}},
              {"type":"urn:ietf:params:acme:error:caa","detail":"forbidden","identifier":{"type":"dns","value":"b.example"}}]}"#,
        &ctx(),
    );
    assert!(
        matches!(&err, Error::CaaForbids { name: Some(n), .. } if n == "b.example"),
        "{err:?}"
    );
    let retryable = api(
        r#"{"type":"urn:ietf:params:acme:error:compound",
            "subproblems":[{"type":"urn:ietf:params:acme:error:dns","detail":"SERVFAIL","identifier":{"type":"dns","value":"a.example"}}]}"#,
        &ctx(),
    );
    assert!(
        matches!(&retryable, Error::ValidationFailed { name: Some(n), .. } if n == "a.example")
    );
}

#[test]
fn transport_errors() {
    let timeout = instant_acme::Error::Other(Box::new(RequestTimedOut(Duration::from_secs(1))));
    assert!(matches!(
        classify(timeout, &ctx()),
        Error::Unavailable { .. }
    ));
    let polling = instant_acme::Error::Timeout(None);
    assert!(matches!(
        classify(polling, &ctx()),
        Error::Unavailable { .. }
    ));
    let unsupported = instant_acme::Error::Unsupported("profiles");
    assert!(matches!(classify(unsupported, &ctx()), Error::Config(_)));
    let odd = instant_acme::Error::Str("no order URL found");
    assert!(matches!(classify(odd, &ctx()), Error::Internal(_)));
}

#[test]
fn unreadable_bodies_use_the_status() {
    let json_err = || instant_acme::Error::Json(serde_json::from_str::<u8>("<html>").unwrap_err());
    let mut ctx = ctx();
    ctx.last = Some(ResponseMeta {
        status: 502,
        retry_after: None,
    });
    assert!(matches!(
        classify(json_err(), &ctx),
        Error::Unavailable { .. }
    ));
    ctx.last = Some(ResponseMeta {
        status: 429,
        retry_after: Some(Duration::from_secs(5)),
    });
    assert!(matches!(
        classify(json_err(), &ctx),
        Error::RateLimited {
            retry_after: Some(_),
            ..
        }
    ));
    ctx.last = None;
    assert!(matches!(
        classify(json_err(), &ctx),
        Error::Transient { .. }
    ));
}

#[test]
fn untrusted_ca_certificates_are_configuration_errors() {
    let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
    let outer = std::io::Error::other(io); // hyper-rustls wraps it twice
    let err = instant_acme::Error::Other(Box::new(outer));
    assert!(matches!(classify(err, &ctx()), Error::Config(_)));
}
