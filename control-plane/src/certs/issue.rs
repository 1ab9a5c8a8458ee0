//! One order end to end (certmagic's shape: lock → re-check → issue → store
//! → release): the claimed order row is the lock; re-check that the domain
//! still wants a certificate and has none that is good; check the CA budget;
//! issue through the [`Issuer`] with the edges as challenge publisher; store
//! the certificate (which publishes it), its event and the outcome in one
//! transaction. A failure is classified: retried with backoff, deferred, or
//! given up with a `certificate.failed` event.

use super::policy::{self, Budget};
use super::publisher::EdgePublisher;
use crate::db;
use crate::db::certificates::NewCertificate;
use crate::db::events::EventType;
use crate::db::orders::ClaimedOrder;
use crate::hostname::Hostname;
use crate::ids::TenantId;
use crate::settings::Settings;
use chrono::Utc;
use portico_acme::{CertificateId, IssueRequest, Issued, Issuer};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

pub struct Issuance {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub primary: NamedIssuer,
    /// Used after repeated failures of the primary.
    pub fallback: Option<NamedIssuer>,
    /// Consecutive failures of an order after which the fallback is used.
    pub fallback_after: i32,
    pub publisher: EdgePublisher,
}

/// An issuer and its name: `dev-ca` or the ACME directory URL, stored with
/// each certificate and the key of the CA rate budget.
pub struct NamedIssuer {
    pub name: String,
    pub issuer: Arc<dyn Issuer>,
}

impl NamedIssuer {
    pub fn new(name: &str, issuer: Arc<dyn Issuer>) -> Self {
        NamedIssuer {
            name: name.to_string(),
            issuer,
        }
    }
}

impl Issuance {
    /// Runs one claimed order to its outcome; errors are only database ones.
    pub async fn run(&self, order: &ClaimedOrder) -> anyhow::Result<()> {
        let host = order.hostname.as_str();
        let eligible = {
            let mut conn = self.pool.acquire().await?;
            db::published::hosts_named(&mut conn, std::slice::from_ref(&order.hostname)).await?
        };
        if eligible.is_empty() {
            db::orders::finish(
                &self.pool,
                order.domain_id,
                "failed",
                Some("the domain is not served (deleted, or its tenant suspended)"),
                None,
            )
            .await?;
            return Ok(());
        }
        let current = db::certificates::info(&self.pool, order.domain_id).await?;
        let renewing = order.reason == "renewal" || order.reason == "forced";
        if let Some(c) = &current
            && !renewing
            && c.not_after > Utc::now() + chrono::Duration::days(1)
            && self.key_opens(&order.hostname).await?
        {
            // Another worker (or an earlier run of this order) got there first.
            db::orders::finish(&self.pool, order.domain_id, "done", None, None).await?;
            return Ok(());
        }
        let registered = Hostname::from_stored(order.hostname.clone())
            .registrable_domain()
            .to_string();
        let chosen = self.pick(order.failures);
        let counts = db::orders::budget_counts(&self.pool, &chosen.name, host, &registered).await?;
        if let Budget::Defer(wait, why) =
            policy::budget(counts, &self.settings.certificates, current.is_some())
        {
            tracing::info!(host, %why, "certificate order deferred by the CA budget");
            db::orders::finish(
                &self.pool,
                order.domain_id,
                "deferred",
                Some(&why),
                Some(wait),
            )
            .await?;
            return Ok(());
        }
        db::orders::log_event(&self.pool, &chosen.name, host, &registered, "order").await?;
        db::domains::set_tls_status(
            &self.pool,
            order.domain_id,
            if current.is_some() {
                "renewing"
            } else {
                "issuing"
            },
        )
        .await?;
        let mut req = IssueRequest::new(
            vec![order.hostname.clone()],
            self.settings.certificates.challenge,
        );
        // A renewal names the certificate it replaces (ARI), when that one
        // came from the CA now asked.
        if let Some(previous) = current
            .as_ref()
            .filter(|c| c.issuer == chosen.name)
            .and_then(|c| c.ari_id.as_deref())
            .and_then(|id| CertificateId::parse(id).ok())
        {
            req = req.replacing(previous);
        }
        match chosen.issuer.issue(&req, &self.publisher).await {
            Ok(issued) => {
                self.store(order, chosen, &registered, issued, current.is_some())
                    .await
            }
            Err(e) => self.failed(order, chosen, &registered, &e).await,
        }
    }

    /// The configured issuer called `name`, if any.
    pub fn named(&self, name: &str) -> Option<&NamedIssuer> {
        self.issuers().find(|issuer| issuer.name == name)
    }

    /// The primary issuer, then the fallback, if any.
    pub fn issuers(&self) -> impl Iterator<Item = &NamedIssuer> {
        std::iter::once(&self.primary).chain(&self.fallback)
    }

    /// The issuer for an order that has failed `failures` times in a row:
    /// the primary until `fallback_after` failures, then the fallback and
    /// the primary in turn (a CA that recovered is used again).
    pub fn pick(&self, failures: i32) -> &NamedIssuer {
        match &self.fallback {
            Some(fallback) if policy::use_fallback(failures, self.fallback_after) => fallback,
            _ => &self.primary,
        }
    }

    /// Whether the stored key still opens (a lost encryption key means the
    /// certificate must be issued again, not kept).
    async fn key_opens(&self, hostname: &str) -> anyhow::Result<bool> {
        let mut conn = self.pool.acquire().await?;
        let rows = db::published::certificates_named(&mut conn, &[hostname.to_string()]).await?;
        Ok(rows.into_iter().any(|row| {
            crate::publish::frames::bundle(row, &self.settings.encryption_keys).is_some()
        }))
    }

    async fn store(
        &self,
        order: &ClaimedOrder,
        chosen: &NamedIssuer,
        registered: &str,
        issued: Issued,
        renewal: bool,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        db::certificates::upsert(
            &mut tx,
            &self.settings.encryption_keys,
            &NewCertificate {
                domain_id: order.domain_id,
                hostname: &order.hostname,
                chain_pem: &issued.chain_pem,
                key_pem: issued.key_pem.expose(),
                not_after: issued.not_after,
                issuer: &chosen.name,
                not_before: Some(issued.not_before),
                renew_at: Some(issued.renew_at(rand::random())),
                ari_id: issued.certificate_id.as_ref().map(CertificateId::as_str),
                ari_window: issued.ari_window.map(|w| (w.start, w.end)),
            },
        )
        .await?;
        let event = if renewal {
            EventType::CertificateRenewed
        } else {
            EventType::CertificateIssued
        };
        let data = serde_json::json!({
            "hostname": order.hostname, "issuer": chosen.name,
            "not_before": issued.not_before, "not_after": issued.not_after,
        });
        db::events::append(
            &mut *tx,
            TenantId::from_uuid(order.tenant_id),
            event,
            order.domain_id,
            &data,
        )
        .await?;
        db::orders::log_event(
            &mut *tx,
            &chosen.name,
            &order.hostname,
            registered,
            "issued",
        )
        .await?;
        db::orders::finish(&mut *tx, order.domain_id, "done", None, None).await?;
        db::domains::set_tls_status(&mut *tx, order.domain_id, "active").await?;
        tx.commit().await?;
        tracing::info!(host = %order.hostname, not_after = %issued.not_after, "certificate issued");
        Ok(())
    }

    async fn failed(
        &self,
        order: &ClaimedOrder,
        chosen: &NamedIssuer,
        registered: &str,
        e: &portico_acme::Error,
    ) -> anyhow::Result<()> {
        let host = &order.hostname;
        let kind = if matches!(e, portico_acme::Error::ValidationFailed { .. }) {
            "validation_failed"
        } else {
            "error"
        };
        db::orders::log_event(&self.pool, &chosen.name, host, registered, kind).await?;
        let failing_for = order
            .first_failed_at
            .map(|t| (Utc::now() - t).to_std().unwrap_or_default())
            .unwrap_or_default();
        let message = format!("{}: {e}", chosen.name);
        // A refusal for good from the primary is worth asking the fallback.
        let fallback_next = self.fallback.is_some() && std::ptr::eq(chosen, &self.primary);
        let failures = if !e.is_retryable() && fallback_next {
            order.failures.saturating_add(1).max(self.fallback_after)
        } else {
            order.failures.saturating_add(1)
        };
        db::orders::set_failures(&self.pool, order.domain_id, failures).await?;
        let retryable = e.is_retryable() || fallback_next;
        if !retryable || policy::give_up(failing_for, &self.settings.certificates) {
            tracing::warn!(host = %host, error = %message, "certificate order failed for good");
            let mut tx = self.pool.begin().await?;
            db::orders::finish(&mut *tx, order.domain_id, "failed", Some(&message), None).await?;
            db::domains::set_tls_status(&mut *tx, order.domain_id, "failed").await?;
            let data = serde_json::json!({"hostname": host, "error": message});
            db::events::append(
                &mut *tx,
                TenantId::from_uuid(order.tenant_id),
                EventType::CertificateFailed,
                order.domain_id,
                &data,
            )
            .await?;
            tx.commit().await?;
            return Ok(());
        }
        let wait: Duration = policy::retry_in(order.attempts, e.retry_delay());
        if fallback_next && failures >= self.fallback_after {
            tracing::warn!(host = %host, primary = %chosen.name, fallback = %self.pick(failures).name,
                "the primary CA keeps failing; the next attempt uses the fallback");
        }
        tracing::info!(host = %host, error = %message, retry_in_secs = wait.as_secs(), "certificate order failed; will retry");
        db::orders::finish(
            &self.pool,
            order.domain_id,
            "deferred",
            Some(&message),
            Some(wait),
        )
        .await?;
        Ok(())
    }
}
