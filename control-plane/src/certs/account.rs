//! [`LazyAcme`]: an [`Issuer`] over one ACME directory whose account is
//! loaded (or created and stored, sealed) on first use rather than at
//! start-up. A CA that cannot be reached then costs the orders that need
//! it a retryable `Unavailable` error each, instead of keeping the issuer
//! (and with it any fallback directory) from starting at all.

use crate::crypto::Keyring;
use crate::db;
use async_trait::async_trait;
use portico_acme::{
    AccountCredentials, AcmeConfig, AcmeIssuer, AriAdvice, CertificateId, ChallengePublisher,
    Error, IssueRequest, Issued, Issuer,
};
use sqlx::PgPool;
use tokio::sync::OnceCell;

pub struct LazyAcme {
    pool: PgPool,
    keys: Keyring,
    config: AcmeConfig,
    account: OnceCell<AcmeIssuer>,
}

impl LazyAcme {
    pub fn new(pool: PgPool, keys: Keyring, config: AcmeConfig) -> Self {
        LazyAcme {
            pool,
            keys,
            config,
            account: OnceCell::new(),
        }
    }

    /// The directory URL, which names this issuer.
    pub fn directory_url(&self) -> &str {
        &self.config.directory_url
    }

    async fn account(&self) -> Result<&AcmeIssuer, Error> {
        self.account.get_or_try_init(|| self.load_or_create()).await
    }

    /// The stored account for the directory, or a new one (stored sealed;
    /// if another process stored one first, that one is used).
    async fn load_or_create(&self) -> Result<AcmeIssuer, Error> {
        let url = self.config.directory_url.as_str();
        let storage = |e: &dyn std::fmt::Display| Error::Transient {
            detail: format!("the ACME account store: {e}"),
        };
        for _ in 0..2 {
            if let Some((key_id, sealed)) = db::orders::account(&self.pool, url)
                .await
                .map_err(|e| storage(&e))?
            {
                let json = self
                    .keys
                    .open(&key_id, &sealed, url.as_bytes())
                    .map_err(|e| {
                        Error::Config(format!("the stored ACME account for {url}: {e}"))
                    })?;
                let creds = AccountCredentials::from_json(&String::from_utf8_lossy(json.expose()))?;
                return AcmeIssuer::from_credentials(&self.config, creds).await;
            }
            let (issuer, creds) = AcmeIssuer::create_account(&self.config).await?;
            let sealed = self
                .keys
                .seal(creds.to_json()?.as_bytes(), url.as_bytes())
                .map_err(|e| Error::Config(format!("sealing the ACME account: {e}")))?;
            if db::orders::put_account(&self.pool, url, &sealed.key_id, &sealed.bytes)
                .await
                .map_err(|e| storage(&e))?
            {
                tracing::info!(
                    directory = url,
                    account = issuer.account_id(),
                    "ACME account created"
                );
                return Ok(issuer);
            }
        }
        Err(Error::Transient {
            detail: format!("could not create or load the ACME account for {url}"),
        })
    }
}

#[async_trait]
impl Issuer for LazyAcme {
    async fn issue(
        &self,
        req: &IssueRequest,
        publisher: &dyn ChallengePublisher,
    ) -> Result<Issued, Error> {
        self.account().await?.issue(req, publisher).await
    }

    async fn prepare(&self) -> Result<(), Error> {
        self.account().await.map(|_| ())
    }

    async fn renewal_info(&self, certificate: &CertificateId) -> Result<Option<AriAdvice>, Error> {
        self.account().await?.renewal_info(certificate).await
    }
}
