//! Domain verification: what DNS records a domain needs, and one DNS check
//! end to end — resolve, diagnose, apply the status machine, store the result
//! and its event in one transaction. Called by the `check_domain_dns` job and
//! by `POST /v1/domains/{id}/verify`.

use crate::db;
use crate::db::config::ConfigKey;
use crate::db::domains::{CheckOutcome, DomainRecord};
use crate::dns::{Diagnosis, DnsChecker, Expected};
use crate::domain_status::{self, DomainStatus};
use crate::hostname::Hostname;
use crate::ids::{DomainId, TenantId};
use crate::settings::Settings;
use sqlx::PgPool;

/// The name of the ownership TXT record for a hostname.
pub fn txt_name(hostname: &str) -> String {
    format!("_portico-challenge.{}", hostname.trim_start_matches("*."))
}

pub fn expected(settings: &Settings, hostname: &Hostname, token: &str) -> Expected {
    let p = &settings.platform;
    Expected {
        hostname: hostname.as_str().to_string(),
        is_apex: hostname.is_apex(),
        cname_target: Some(p.cname_target.as_str().to_string()),
        a: p.edge_ipv4.clone(),
        aaaa: p.edge_ipv6.clone(),
        txt_name: txt_name(hostname.as_str()),
        txt_value: format!("portico-verify={token}"),
        ca_identities: p.ca_identities.clone(),
    }
}

pub fn expected_for(settings: &Settings, record: &DomainRecord) -> Expected {
    expected(
        settings,
        &Hostname::from_stored(record.hostname.clone()),
        &record.verification_token,
    )
}

/// The result of one check: the stored domain afterwards and its diagnosis.
pub struct Checked {
    pub domain: DomainRecord,
    pub diagnosis: Diagnosis,
}

/// Runs one DNS check for a domain and stores the outcome. `None` when the
/// domain no longer exists (deleted while the job waited): nothing to do.
pub async fn check_domain(
    pool: &PgPool,
    settings: &Settings,
    dns: &DnsChecker,
    id: DomainId,
) -> anyhow::Result<Option<Checked>> {
    // Resolve outside the transaction: DNS may take seconds, a row lock must not.
    let Some(before) = db::domains::find(pool, id).await? else {
        return Ok(None);
    };
    let hostname = Hostname::from_stored(before.hostname.clone());
    let probe_name = hostname.as_str().trim_start_matches("*.").to_string();
    let expected = expected_for(settings, &before);
    let diagnosis = dns
        .check(&probe_name, hostname.registrable_domain(), &expected)
        .await;

    let mut tx = pool.begin().await?;
    let Some(current) = db::domains::lock_for_check(&mut *tx, id).await? else {
        return Ok(None);
    };
    let status = DomainStatus::parse(&current.status).unwrap_or(DomainStatus::Pending);
    let wrong = u32::try_from(current.consecutive_wrong).unwrap_or(0);
    let t = domain_status::after_check(
        status,
        wrong,
        &diagnosis,
        settings.checks.misconfigured_after,
    );
    let attempts = u32::try_from(current.check_attempts)
        .unwrap_or(0)
        .saturating_add(1);
    let outcome = CheckOutcome {
        status: t.status.as_str().to_string(),
        diagnosis: serde_json::to_value(&diagnosis)?,
        consecutive_wrong: i32::try_from(t.consecutive_wrong).unwrap_or(i32::MAX),
        check_attempts: i32::try_from(attempts).unwrap_or(i32::MAX),
        next_check_in: domain_status::next_check_in(
            t.status,
            attempts,
            settings.checks.active_interval,
            rand::random(),
        ),
        verified: t.status == DomainStatus::Active,
    };
    let domain = db::domains::record_check(&mut *tx, id, &outcome).await?;
    if domain.status != current.status {
        // On-demand TLS is allowed only while verified: edges must know.
        db::config::publish(&mut tx, &[ConfigKey::Host(domain.hostname.clone())]).await?;
        if domain.status == "active" && domain.tls_status == "none" {
            // Verified: order its certificate ahead of the first request.
            db::orders::request(&mut tx, domain.id, "new").await?;
        }
    }
    if let Some(event) = t.event {
        let data = crate::api::domains::DomainView::new(settings, &domain).to_json();
        db::events::append(
            &mut *tx,
            TenantId::from_uuid(domain.tenant_id),
            event,
            domain.id,
            &data,
        )
        .await?;
        tracing::info!(host = %domain.hostname, event = event.as_str(), "domain status changed");
    }
    tx.commit().await?;
    Ok(Some(Checked { domain, diagnosis }))
}

/// Marks long-pending domains stale, each with its event.
pub async fn mark_stale(pool: &PgPool, settings: &Settings) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let stale = db::domains::mark_stale(&mut *tx, settings.checks.stale_after).await?;
    for d in &stale {
        let data = crate::api::domains::DomainView::new(settings, d).to_json();
        db::events::append(
            &mut *tx,
            TenantId::from_uuid(d.tenant_id),
            db::events::EventType::DomainStale,
            d.id,
            &data,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(stale.len())
}
