//! Webhooks: tenants' events, signed and delivered to their endpoints.
//!
//! Data flows like this: a change writes its event to the `events` outbox
//! in its own transaction; the dispatcher ([`dispatch`]) turns each new
//! event into one durable message per matching enabled endpoint; the job
//! scheduler leases due messages and enqueues a `deliver_webhook` job each;
//! the job ([`deliver`]) signs the message ([`signature`], Standard
//! Webhooks), sends it through the SSRF-guarded client ([`ssrf`]), records
//! the attempt and schedules the next one or disables the endpoint.
//! Secrets are sealed at rest with the configured [`Keyring`].

pub mod deliver;
pub mod dispatch;
pub mod signature;
pub mod ssrf;

use crate::crypto::{CryptoError, Keyring};
use crate::db::webhooks::{EndpointRecord, SealedSecret};
use crate::settings::Settings;
use chrono::{DateTime, Utc};
use serde::Serialize;
use signature::SigningSecret;
use ssrf::{Guard, GuardedResolve, HickoryResolver, HostResolver};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// What the API and the delivery job share: settings, keys, the guard and
/// the HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    pub settings: Arc<Settings>,
    pub guard: Guard,
    pub client: reqwest::Client,
}

impl Webhooks {
    /// Resolves endpoint hosts with the configured (or the system's) resolvers.
    pub fn new(settings: Arc<Settings>) -> anyhow::Result<Webhooks> {
        let dns_timeout = settings.webhooks.timeout.min(Duration::from_secs(5));
        let resolver = HickoryResolver::new(&settings.webhooks.nameservers, dns_timeout)?;
        Self::with_resolver(settings, Arc::new(resolver))
    }

    /// The same with a given resolver (tests inject one).
    pub fn with_resolver(
        settings: Arc<Settings>,
        resolver: Arc<dyn HostResolver>,
    ) -> anyhow::Result<Webhooks> {
        let guard = Guard {
            resolver,
            allow_private: settings.webhooks.allow_private,
        };
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config()?)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(settings.webhooks.timeout)
            .connect_timeout(settings.webhooks.timeout.min(Duration::from_secs(10)))
            .dns_resolver(GuardedResolve(guard.clone()))
            .user_agent(concat!("Portico-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Webhooks {
            settings,
            guard,
            client,
        })
    }

    fn keys(&self) -> &Keyring {
        &self.settings.encryption_keys
    }

    pub fn seal(
        &self,
        endpoint: Uuid,
        secret: &SigningSecret,
    ) -> Result<SealedSecret, CryptoError> {
        let sealed = self.keys().seal(secret.bytes(), &seal_context(endpoint))?;
        Ok(SealedSecret {
            key_id: sealed.key_id,
            bytes: sealed.bytes,
        })
    }

    /// The secrets that sign for `endpoint` at `now`: the current one, and the
    /// previous one while its rotation overlap lasts.
    pub fn signing_secrets(
        &self,
        e: &EndpointRecord,
        now: DateTime<Utc>,
    ) -> Result<Vec<SigningSecret>, CryptoError> {
        let context = seal_context(e.id);
        let open = |key_id: &str, bytes: &[u8]| {
            self.keys()
                .open(key_id, bytes, &context)
                .map(|s| SigningSecret::from_bytes(s.expose().clone()))
        };
        let mut secrets = vec![open(&e.secret_key_id, &e.secret_sealed)?];
        if let (Some(id), Some(bytes), Some(until)) = (
            &e.previous_secret_key_id,
            &e.previous_secret_sealed,
            e.previous_secret_expires_at,
        ) && until > now
        {
            secrets.push(open(id, bytes)?);
        }
        Ok(secrets)
    }
}

/// Binds a sealed secret to its endpoint: a row's secret can't be moved to another.
fn seal_context(endpoint: Uuid) -> Vec<u8> {
    format!("webhook-secret:{endpoint}").into_bytes()
}

/// ring only (see docs: a second provider makes rustls panic), trusting the
/// platform's roots. The Fly Machines adapter (`infra::fly`) shares it.
pub(crate) fn tls_config() -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(Vec::new(), provider.clone())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous() // Not dangerous: the platform verifier.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The body of every webhook: `{id, type, timestamp, data}`.
#[derive(Debug, Serialize)]
pub struct Payload<'a> {
    /// The event's id: the same event replayed carries the same id.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub timestamp: DateTime<Utc>,
    pub data: &'a serde_json::Value,
}

/// `msg_` + the message id: the `webhook-id` header, the same on every attempt.
pub fn webhook_id(message: Uuid) -> String {
    format!("msg_{}", message.simple())
}
