//! `DevCa` through the `Issuer` trait: leaves chain to its root, no challenge
//! is published, and the root survives a restart.

use async_trait::async_trait;
use portico_acme::test_util::verify_chain;
use portico_acme::{
    Challenge, ChallengeKind, ChallengePublisher, DevCa, IssueRequest, Issuer, PublishError,
};

/// The development CA must never publish a challenge.
struct NoChallenges;

#[async_trait]
impl ChallengePublisher for NoChallenges {
    async fn publish(&self, answer: &Challenge) -> Result<(), PublishError> {
        panic!("DevCa published {answer:?}");
    }

    async fn withdraw(&self, answer: &Challenge) {
        panic!("DevCa withdrew {answer:?}");
    }
}

#[tokio::test]
async fn dev_ca_leaves_verify_against_a_root_that_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = DevCa::open(dir.path()).expect("create");
    let root = first.root_pem().to_owned();
    assert!(dir.path().join("dev-ca.pem").exists());
    assert!(dir.path().join("dev-ca.key").exists());
    drop(first);

    let ca = DevCa::open(dir.path()).expect("load");
    assert_eq!(ca.root_pem(), root, "the same root after a restart");

    let req = IssueRequest::new(
        vec!["app.localhost".into(), "api.localhost".into()],
        ChallengeKind::Http01,
    );
    let issued = ca.issue(&req, &NoChallenges).await.expect("issued");
    verify_chain(&issued.chain_pem, &root, "app.localhost").expect("app chain");
    verify_chain(&issued.chain_pem, &root, "api.localhost").expect("api chain");
    assert_eq!(
        issued.not_after - issued.not_before,
        chrono::TimeDelta::days(90)
    );
    assert!(verify_chain(&issued.chain_pem, &root, "other.localhost").is_err());
}
