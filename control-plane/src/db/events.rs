//! The events outbox. Rows are written in the same transaction as the change
//! they describe; delivery to webhooks reads them later.

use crate::ids::{EventId, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum EventType {
    #[serde(rename = "domain.created")]
    DomainCreated,
    #[serde(rename = "domain.verified")]
    DomainVerified,
    #[serde(rename = "domain.misconfigured")]
    DomainMisconfigured,
    #[serde(rename = "domain.recovered")]
    DomainRecovered,
    #[serde(rename = "domain.stale")]
    DomainStale,
    #[serde(rename = "domain.deleted")]
    DomainDeleted,
    #[serde(rename = "certificate.issued")]
    CertificateIssued,
    #[serde(rename = "certificate.renewed")]
    CertificateRenewed,
    #[serde(rename = "certificate.failed")]
    CertificateFailed,
    /// Sent only by `POST /v1/webhook-endpoints/{id}/test`, to that endpoint.
    #[serde(rename = "webhook.test")]
    WebhookTest,
    #[serde(rename = "webhook_endpoint.disabled")]
    WebhookEndpointDisabled,
    /// A repair run about the domain told the tenant it is degraded.
    #[serde(rename = "health.degraded")]
    HealthDegraded,
    /// That run closed: the check passes again.
    #[serde(rename = "health.recovered")]
    HealthRecovered,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::DomainCreated => "domain.created",
            EventType::DomainVerified => "domain.verified",
            EventType::DomainMisconfigured => "domain.misconfigured",
            EventType::DomainRecovered => "domain.recovered",
            EventType::DomainStale => "domain.stale",
            EventType::DomainDeleted => "domain.deleted",
            EventType::CertificateIssued => "certificate.issued",
            EventType::CertificateRenewed => "certificate.renewed",
            EventType::CertificateFailed => "certificate.failed",
            EventType::WebhookTest => "webhook.test",
            EventType::WebhookEndpointDisabled => "webhook_endpoint.disabled",
            EventType::HealthDegraded => "health.degraded",
            EventType::HealthRecovered => "health.recovered",
        }
    }

    /// Every type, in documentation order.
    pub const ALL: [EventType; 13] = [
        EventType::DomainCreated,
        EventType::DomainVerified,
        EventType::DomainMisconfigured,
        EventType::DomainRecovered,
        EventType::DomainStale,
        EventType::DomainDeleted,
        EventType::CertificateIssued,
        EventType::CertificateRenewed,
        EventType::CertificateFailed,
        EventType::WebhookTest,
        EventType::WebhookEndpointDisabled,
        EventType::HealthDegraded,
        EventType::HealthRecovered,
    ];

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub id: EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub subject_id: Uuid,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

pub async fn append(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    event_type: EventType,
    subject: Uuid,
    data: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO events (id, tenant_id, type, subject_id, data) VALUES ($1, $2, $3, $4, $5)",
        EventId::generate().as_uuid(),
        tenant.as_uuid(),
        event_type.as_str(),
        subject,
        data
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Appends one event of the same type per subject in a single statement.
pub async fn append_many(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    event_type: EventType,
    subjects: &[Uuid],
    data: &[serde_json::Value],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = subjects
        .iter()
        .map(|_| EventId::generate().as_uuid())
        .collect();
    sqlx::query!(
        "INSERT INTO events (id, tenant_id, type, subject_id, data)
         SELECT id, $2, $3, subject, data FROM UNNEST($1::uuid[], $4::uuid[], $5::jsonb[]) AS u(id, subject, data)",
        &ids,
        tenant.as_uuid(),
        event_type.as_str(),
        subjects,
        data
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A tenant's events, oldest first, after an optional cursor.
pub async fn list(
    db: &PgPool,
    tenant: TenantId,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT id, type, subject_id, data, created_at FROM events
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
        tenant.as_uuid(),
        after,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Event {
            id: EventId::from_uuid(r.id),
            event_type: r.r#type,
            subject_id: r.subject_id,
            data: r.data,
            created_at: r.created_at,
        })
        .collect())
}
