//! One ACME issuance, step by step: new order → for each authorization,
//! publish the answer and mark the challenge ready → wait for the order to be
//! ready → withdraw every answer (also on failure) → finalize with a fresh
//! P-256 key → download the chain → read its validity and ARI window.

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus,
    RetryPolicy,
};
use rcgen::PublicKeyData;
use tracing::{debug, info, warn};

use crate::account::Timeouts;
use crate::acme_issuer::ari_advice;
use crate::certificate;
use crate::challenge::{self, Challenge, ChallengePublisher};
use crate::classify::{Context, classify, classify_problem, classify_validation};
use crate::error::Error;
use crate::issuer::{ChallengeKind, IssueRequest, Issued, PrivateKeyPem};

/// Run one issuance. Must run inside [`crate::http::scoped`].
pub(crate) async fn issue(
    account: &Account,
    timeouts: &Timeouts,
    req: &IssueRequest,
    publisher: &dyn ChallengePublisher,
) -> Result<Issued, Error> {
    let kind = req.challenge;
    let mut order = new_order(account, req).await?;
    debug!(order = order.url(), "order created");

    let mut published = Vec::new();
    let authorized = authorize(&mut order, kind, timeouts, publisher, &mut published).await;
    for answer in &published {
        publisher.withdraw(answer).await;
    }
    authorized?;

    let key = certificate::new_leaf_key()?;
    let chain_pem = finalize(&mut order, &req.names, &key, timeouts, kind).await?;
    let leaf = certificate::parse_leaf(&chain_pem)?;
    if leaf.public_key_der != key.subject_public_key_info() {
        return Err(Error::Internal(
            "the CA returned a certificate for another key".into(),
        ));
    }
    let ari_window = match &leaf.id {
        Some(id) => match ari_advice(account, id).await {
            Ok(advice) => advice.map(|advice| advice.window),
            Err(err) => {
                warn!(error = %err, "ARI look-up failed; renewing on our own schedule");
                None
            }
        },
        None => None,
    };
    info!(not_after = %leaf.not_after, ari = ari_window.is_some(), "certificate issued");
    Ok(Issued {
        chain_pem,
        key_pem: PrivateKeyPem::new(key.serialize_pem()),
        not_before: leaf.not_before,
        not_after: leaf.not_after,
        ari_window,
        certificate_id: leaf.id,
    })
}

/// Create the order, with `replaces` when given. If the CA does not support
/// ARI, or says the old certificate was already replaced, order without it.
async fn new_order(account: &Account, req: &IssueRequest) -> Result<Order, Error> {
    let identifiers: Vec<Identifier> = req.names.iter().cloned().map(Identifier::Dns).collect();
    let err = match &req.replaces {
        None => {
            return account
                .new_order(&NewOrder::new(&identifiers))
                .await
                .map_err(|e| acme_error(e, req.challenge));
        }
        Some(previous) => {
            let order = NewOrder::new(&identifiers).replaces(previous.to_acme());
            match account.new_order(&order).await {
                Ok(order) => return Ok(order),
                Err(err) => err,
            }
        }
    };
    if !replaces_refused(&err) {
        return Err(acme_error(err, req.challenge));
    }
    debug!(error = %err, "ordering without `replaces`");
    account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| acme_error(e, req.challenge))
}

/// Whether to order again without `replaces`: the CA has no ARI, says the
/// old certificate was already replaced, or accepted the order but did not
/// reflect `replaces` in it (breaking RFC 9773 §5; that order is left to
/// expire at the CA).
fn replaces_refused(err: &instant_acme::Error) -> bool {
    match err {
        instant_acme::Error::Unsupported(_) => true,
        instant_acme::Error::Other(other) => {
            other.to_string().starts_with("replaces field mismatch")
        }
        instant_acme::Error::Api(problem) => problem
            .r#type
            .as_deref()
            .is_some_and(|t| t.ends_with(":alreadyReplaced")),
        _ => false,
    }
}

/// Answer every pending authorization, then wait for the order to be ready.
/// Every answer handed to `publish` is recorded in `published`, even if
/// publishing failed half-way, so the caller can withdraw it.
async fn authorize(
    order: &mut Order,
    kind: ChallengeKind,
    timeouts: &Timeouts,
    publisher: &dyn ChallengePublisher,
    published: &mut Vec<Challenge>,
) -> Result<(), Error> {
    answer_all(order, kind, publisher, published).await?;
    let policy = retry_policy(timeouts, timeouts.validation);
    match order.poll_ready(&policy).await {
        Ok(OrderStatus::Ready) => Ok(()),
        Ok(status) => {
            let fallback = Error::Rejected {
                problem_type: None,
                detail: format!("the order became {status:?}"),
            };
            Err(explain_invalid(order, kind, fallback).await)
        }
        Err(instant_acme::Error::Api(problem)) => {
            let fallback = classify_problem(&problem, &Context::current(kind));
            Err(explain_invalid(order, kind, fallback).await)
        }
        Err(err) => Err(acme_error(err, kind)),
    }
}

/// For each authorization still pending: publish the answer, then tell the
/// CA to validate. Authorizations already valid (reused) are skipped.
async fn answer_all(
    order: &mut Order,
    kind: ChallengeKind,
    publisher: &dyn ChallengePublisher,
    published: &mut Vec<Challenge>,
) -> Result<(), Error> {
    let mut authorizations = order.authorizations();
    while let Some(next) = authorizations.next().await {
        let mut authz = next.map_err(|e| acme_error(e, kind))?;
        let name = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Valid => {
                debug!(name, "authorization already valid");
                continue;
            }
            AuthorizationStatus::Pending => {}
            status => {
                return Err(Error::Rejected {
                    problem_type: None,
                    detail: format!("the authorization for {name} is {status:?}"),
                });
            }
        }
        let mut challenge =
            authz
                .challenge(acme_type(kind))
                .ok_or_else(|| Error::ChallengeNotOffered {
                    challenge: kind,
                    name: name.clone(),
                })?;
        let key_authorization = challenge.key_authorization();
        let answer = challenge::answer(
            kind,
            &name,
            &challenge.token,
            key_authorization.as_str(),
            key_authorization.digest().as_ref(),
        )?;
        published.push(answer.clone());
        publisher.publish(&answer).await?;
        debug!(name, "answer published; challenge ready");
        challenge
            .set_ready()
            .await
            .map_err(|e| acme_error(e, kind))?;
    }
    Ok(())
}

/// Find what the CA saw: the first invalid authorization's challenge error.
async fn explain_invalid(order: &mut Order, kind: ChallengeKind, fallback: Error) -> Error {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if authz.refresh().await.is_err() || authz.status != AuthorizationStatus::Invalid {
            continue;
        }
        let name = authz.identifier().to_string();
        let problem = authz
            .challenges
            .iter()
            .filter(|c| c.r#type == acme_type(kind))
            .find_map(|c| c.error.as_ref());
        return match problem {
            Some(problem) => classify_validation(problem, kind, &name),
            None => Error::ValidationFailed {
                challenge: kind,
                name: Some(name),
                problem_type: None,
                detail: "the CA marked the authorization invalid".into(),
            },
        };
    }
    fallback
}

/// Send our CSR and wait for the chain.
async fn finalize(
    order: &mut Order,
    names: &[String],
    key: &rcgen::KeyPair,
    timeouts: &Timeouts,
    kind: ChallengeKind,
) -> Result<String, Error> {
    let csr = certificate::csr_der(names, key)?;
    order
        .finalize_csr(&csr)
        .await
        .map_err(|e| acme_error(e, kind))?;
    order
        .poll_certificate(&retry_policy(timeouts, timeouts.certificate))
        .await
        .map_err(|e| acme_error(e, kind))
}

fn retry_policy(timeouts: &Timeouts, total: std::time::Duration) -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(timeouts.poll_interval)
        .backoff(1.5)
        .timeout(total)
}

fn acme_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
    }
}

/// Classify with the current task's last response.
pub(crate) fn acme_error(err: instant_acme::Error, kind: ChallengeKind) -> Error {
    classify(err, &Context::current(kind))
}
