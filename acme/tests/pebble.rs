//! `AcmeIssuer` against a real Pebble (Debian's `pebble` package): HTTP-01
//! and TLS-ALPN-01 issuance, chains checked against Pebble's root, stored
//! account credentials, and how CA failures are classified. Each test runs
//! its own Pebble, DNS and responders on free 127.0.0.1 ports.

use portico_acme::test_util::{Env, Options, TestPublisher, verify_chain};
use portico_acme::{
    AccountCredentials, AcmeConfig, AcmeIssuer, ChallengeKind, Error, ExternalAccountBinding,
    IssueRequest, Issued, Issuer,
};

/// What the control plane's policy does with `Transient`: try again. Pebble
/// rejects 5 % of nonces by default; instant-acme retries each request three
/// times, so a failure getting through is rare, but not impossible.
async fn issue_retrying_transient(
    issuer: &AcmeIssuer,
    req: &IssueRequest,
    publisher: &TestPublisher,
) -> Issued {
    let mut last = None;
    for _ in 0..3 {
        match issuer.issue(req, publisher).await {
            Ok(issued) => return issued,
            Err(err @ Error::Transient { .. }) => last = Some(err),
            Err(err) => panic!("issuance failed: {err:?}"),
        }
    }
    panic!("transient errors three times: {last:?}")
}

async fn create_account_retrying_transient(
    config: &AcmeConfig,
) -> (AcmeIssuer, AccountCredentials) {
    let mut last = None;
    for _ in 0..3 {
        match AcmeIssuer::create_account(config).await {
            Ok(created) => return created,
            Err(err @ Error::Transient { .. }) => last = Some(err),
            Err(err) => panic!("account creation failed: {err:?}"),
        }
    }
    panic!("transient errors three times: {last:?}")
}

fn no_nonce_faults() -> Options {
    Options {
        nonce_reject: Some(0),
        ..Options::default()
    }
}

#[tokio::test]
async fn http01_issues_a_chain_to_pebbles_root_despite_bad_nonces() {
    // Pebble's default nonce rejection (5 %) stays on here.
    let env = Env::start(Options::default()).await.expect("Pebble starts");
    let (issuer, _) = create_account_retrying_transient(&env.config()).await;
    let publisher = env.publisher();
    let names = vec![
        "http-01.example.com".to_owned(),
        "www.http-01.example.com".to_owned(),
    ];
    let req = IssueRequest::new(names.clone(), ChallengeKind::Http01);

    let issued = issue_retrying_transient(&issuer, &req, &publisher).await;

    let root = env.pebble.issuing_root_pem().await.expect("/roots/0");
    for name in &names {
        verify_chain(&issued.chain_pem, &root, name).expect("chain verifies");
    }
    assert!(issued.not_before < issued.not_after);
    assert!(issued.not_after > chrono::Utc::now());
    assert!(issued.key_pem.expose().contains("BEGIN PRIVATE KEY"));
    assert!(!format!("{issued:?}").contains("BEGIN PRIVATE KEY"));
    assert_eq!(issued.ari_window, None, "Pebble 2.4 has no ARI");
    assert!(issued.certificate_id.is_some());
    let (published, withdrawn) = publisher.counts();
    assert_eq!(published, withdrawn, "every answer is withdrawn");
    assert!(published >= 2);
    assert!(issued.renew_at(0.5) > issued.not_before);
}

#[tokio::test]
async fn tls_alpn01_issues_for_every_name() {
    let env = Env::start(no_nonce_faults()).await.expect("Pebble starts");
    let (issuer, _) = AcmeIssuer::create_account(&env.config())
        .await
        .expect("account");
    let publisher = env.publisher();
    let names = vec![
        "alpn-1.example.com".to_owned(),
        "alpn-2.example.com".to_owned(),
    ];
    let req = IssueRequest::new(names.clone(), ChallengeKind::TlsAlpn01);

    let issued = issuer.issue(&req, &publisher).await.expect("issued");

    let root = env.pebble.issuing_root_pem().await.expect("/roots/0");
    for name in &names {
        verify_chain(&issued.chain_pem, &root, name).expect("chain verifies");
    }
    assert_eq!(publisher.counts(), (2, 2));
}

#[tokio::test]
async fn stored_credentials_load_the_same_account_and_issue_again() {
    let env = Env::start(Options {
        authz_reuse: Some(100),
        ..Options::default()
    })
    .await
    .expect("Pebble starts");
    let config = env.config();
    let (first, credentials) = create_account_retrying_transient(&config).await;
    let publisher = env.publisher();
    let req = IssueRequest::new(vec!["stored.example.com".into()], ChallengeKind::Http01);
    let first_cert = issue_retrying_transient(&first, &req, &publisher).await;
    let after_first = publisher.counts();
    assert!(after_first.0 >= 1 && after_first.0 == after_first.1);

    let json = credentials.to_json().expect("serialize");
    let loaded = AcmeIssuer::from_credentials(
        &config,
        AccountCredentials::from_json(&json).expect("parse"),
    )
    .await
    .expect("load");
    assert_eq!(loaded.account_id(), first.account_id());

    // The same account: Pebble reuses the valid authorization, nothing is
    // published. `replaces` is dropped because Pebble has no ARI.
    let renewal = req
        .clone()
        .replacing(first_cert.certificate_id.clone().expect("ARI id"));
    let again = issue_retrying_transient(&loaded, &renewal, &publisher).await;
    assert_eq!(publisher.counts(), after_first);
    assert_ne!(again.certificate_id, first_cert.certificate_id);
    let root = env.pebble.issuing_root_pem().await.expect("/roots/0");
    verify_chain(&again.chain_pem, &root, "stored.example.com").expect("chain verifies");

    let elsewhere = AcmeConfig::new("https://127.0.0.1:1/dir");
    let wrong = AcmeIssuer::from_credentials(
        &elsewhere,
        AccountCredentials::from_json(&json).expect("parse"),
    )
    .await;
    assert!(matches!(wrong, Err(Error::Config(_))), "{:?}", wrong.err());
}

#[tokio::test]
async fn an_answer_nobody_serves_is_a_validation_failure() {
    let env = Env::start(no_nonce_faults()).await.expect("Pebble starts");
    let (issuer, _) = AcmeIssuer::create_account(&env.config())
        .await
        .expect("account");
    let publisher = TestPublisher::silent(&env.responders.answers);
    let req = IssueRequest::new(vec!["unserved.example.com".into()], ChallengeKind::Http01);

    let err = issuer.issue(&req, &publisher).await.expect_err("must fail");

    match &err {
        Error::ValidationFailed {
            challenge,
            name,
            detail,
            ..
        } => {
            assert_eq!(*challenge, ChallengeKind::Http01);
            assert_eq!(name.as_deref(), Some("unserved.example.com"));
            assert!(!detail.is_empty());
        }
        other => panic!("expected ValidationFailed, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(
        publisher.counts(),
        (1, 1),
        "withdrawn after the failure too"
    );
}

#[tokio::test]
async fn a_blocked_name_is_rejected() {
    let env = Env::start(Options {
        nonce_reject: Some(0),
        blocklist: vec!["blocked.example.com".into()],
        ..Options::default()
    })
    .await
    .expect("Pebble starts");
    let (issuer, _) = AcmeIssuer::create_account(&env.config())
        .await
        .expect("account");
    let publisher = env.publisher();
    let req = IssueRequest::new(vec!["blocked.example.com".into()], ChallengeKind::Http01);

    let err = issuer.issue(&req, &publisher).await.expect_err("must fail");

    assert!(
        matches!(&err, Error::Rejected { problem_type: Some(t), .. } if t.ends_with(":rejectedIdentifier")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(publisher.counts(), (0, 0));
}

#[tokio::test]
async fn a_ca_certificate_we_do_not_trust_is_a_configuration_error() {
    let env = Env::start(no_nonce_faults()).await.expect("Pebble starts");
    let mut config = env.config();
    config.extra_root_pem = None;

    let err = AcmeIssuer::create_account(&config)
        .await
        .expect_err("must fail");

    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

#[tokio::test]
async fn external_account_binding_is_sent_when_configured() {
    const KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let env = Env::start(Options {
        nonce_reject: Some(0),
        eab_keys: vec![("kid-1".into(), KEY.into())],
        ..Options::default()
    })
    .await
    .expect("Pebble starts");
    let mut config = env.config();

    let refused = AcmeIssuer::create_account(&config)
        .await
        .expect_err("EAB required");
    assert!(
        matches!(&refused, Error::Account { problem_type: Some(t), .. } if t.ends_with(":externalAccountRequired")),
        "{refused:?}"
    );

    config.external_account =
        Some(ExternalAccountBinding::from_base64url("kid-1", KEY).expect("key"));
    let (issuer, _) = AcmeIssuer::create_account(&config)
        .await
        .expect("bound account");
    let req = IssueRequest::new(vec!["eab.example.com".into()], ChallengeKind::Http01);
    issuer.issue(&req, &env.publisher()).await.expect("issued");
}
