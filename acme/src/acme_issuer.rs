//! [`AcmeIssuer`]: an [`Issuer`] backed by an account at an ACME CA (Let's
//! Encrypt, ZeroSSL with EAB, Pebble, any directory URL).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use instant_acme::{Account, NewAccount};
use tracing::Instrument;

use crate::account::{AccountCredentials, AcmeConfig, Timeouts};
use crate::certificate::CertificateId;
use crate::challenge::ChallengePublisher;
use crate::error::Error;
use crate::http::{self, CaClient};
use crate::issuer::{ChallengeKind, IssueRequest, Issued, Issuer};
use crate::order::{self, acme_error};
use crate::renewal::RenewalWindow;

/// Issues certificates from one account at one ACME CA. Cheap to share:
/// concurrent [`issue`](Issuer::issue) calls are independent.
pub struct AcmeIssuer {
    account: Account,
    timeouts: Timeouts,
}

impl std::fmt::Debug for AcmeIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeIssuer")
            .field("account", &self.account.id())
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// What the CA's renewal information (ARI) says about one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AriAdvice {
    /// When the CA would like the certificate renewed.
    pub window: RenewalWindow,
    /// When to ask again (the response's `Retry-After`).
    pub poll_after: Duration,
    /// A page explaining an unusual window (e.g. an incident).
    pub explanation_url: Option<String>,
}

impl AcmeIssuer {
    /// Register a new account (agreeing to the CA's terms of service) and
    /// return it with its credentials, which the caller should store.
    pub async fn create_account(config: &AcmeConfig) -> Result<(Self, AccountCredentials), Error> {
        let builder = Account::builder_with_http(Box::new(client(config)?));
        let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
        let new_account = NewAccount {
            contact: &contact,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let eab = config.external_account.as_ref().map(|eab| eab.to_acme());
        let created = http::scoped(async {
            builder
                .create(&new_account, config.directory_url.clone(), eab.as_ref())
                .await
                .map_err(account_error)
        })
        .await?;
        let (account, credentials) = created;
        tracing::info!(account = account.id(), "ACME account created");
        Ok((Self::with(account, config), AccountCredentials(credentials)))
    }

    /// Load a stored account. Fails with `Config` if the credentials belong
    /// to another directory than `config.directory_url`.
    pub async fn from_credentials(
        config: &AcmeConfig,
        credentials: AccountCredentials,
    ) -> Result<Self, Error> {
        if let Some(directory) = credentials.directory_url()
            && directory != config.directory_url
        {
            return Err(Error::Config(format!(
                "the stored account belongs to {directory}, not {}",
                config.directory_url
            )));
        }
        let builder = Account::builder_with_http(Box::new(client(config)?));
        let account = http::scoped(async {
            builder
                .from_credentials(credentials.0)
                .await
                .map_err(account_error)
        })
        .await?;
        Ok(Self::with(account, config))
    }

    fn with(account: Account, config: &AcmeConfig) -> Self {
        Self {
            account,
            timeouts: config.timeouts,
        }
    }

    /// The account URL at the CA.
    pub fn account_id(&self) -> &str {
        self.account.id()
    }
}

#[async_trait]
impl Issuer for AcmeIssuer {
    async fn issue(
        &self,
        req: &IssueRequest,
        publisher: &dyn ChallengePublisher,
    ) -> Result<Issued, Error> {
        req.validate()?;
        let span = tracing::info_span!(
            "acme_issue",
            names = ?req.names,
            challenge = %req.challenge,
            account = self.account.id(),
        );
        http::scoped(order::issue(&self.account, &self.timeouts, req, publisher))
            .instrument(span)
            .await
    }

    async fn renewal_info(&self, certificate: &CertificateId) -> Result<Option<AriAdvice>, Error> {
        http::scoped(async {
            ari_advice(&self.account, certificate)
                .await
                .map_err(account_error)
        })
        .await
    }
}

/// The ARI look-up itself; `Ok(None)` when the CA has no ARI endpoint.
pub(crate) async fn ari_advice(
    account: &Account,
    certificate: &CertificateId,
) -> Result<Option<AriAdvice>, instant_acme::Error> {
    let (info, poll_after) = match account.renewal_info(&certificate.to_acme()).await {
        Ok(found) => found,
        Err(instant_acme::Error::Unsupported(_)) => return Ok(None),
        Err(err) => return Err(err),
    };
    let window = &info.suggested_window;
    let (Some(start), Some(end)) = (utc(window.start), utc(window.end)) else {
        return Err(instant_acme::Error::Str("ARI window out of range"));
    };
    Ok(Some(AriAdvice {
        window: RenewalWindow { start, end },
        poll_after,
        explanation_url: info.explanation_url,
    }))
}

fn utc(at: time::OffsetDateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.unix_timestamp(), at.nanosecond())
}

fn client(config: &AcmeConfig) -> Result<CaClient, Error> {
    CaClient::new(config.extra_root_pem.as_deref(), config.timeouts.request)
}

/// Account operations involve no challenge; the kind only labels
/// validation problems, which these requests cannot produce.
fn account_error(err: instant_acme::Error) -> Error {
    acme_error(err, ChallengeKind::Http01)
}
