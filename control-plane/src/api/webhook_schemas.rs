//! JSON schemas of webhook bodies, for the OpenAPI document only (nothing
//! serialises these types: bodies are built from the stored event). Every
//! body is `{id, type, timestamp, data}`; `data` depends on the type.

#![allow(dead_code)] // Documentation types: read by utoipa, never built.

use super::domains::DomainView;
use super::webhooks::EndpointView;
use crate::db::events::EventType;
use chrono::{DateTime, Utc};

/// Any webhook body. Headers: `webhook-id` (`msg_...`, the same on every
/// attempt), `webhook-timestamp` (Unix seconds), `webhook-signature`
/// (`v1,<base64 HMAC-SHA256>` per active secret, space-separated), as in
/// the Standard Webhooks specification.
#[derive(utoipa::ToSchema)]
pub struct WebhookPayload {
    /// The event id: the same event sent again (retry, replay) has the same id.
    #[schema(value_type = String, format = Uuid)]
    id: uuid::Uuid,
    #[schema(rename = "type")]
    r#type: EventType,
    /// When the event happened.
    timestamp: DateTime<Utc>,
    /// Depends on `type`; see the `*EventPayload` schemas.
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// `domain.created`, `domain.verified`, `domain.misconfigured`,
/// `domain.recovered`, `domain.stale`, `domain.deleted`: `data` is the
/// domain as `GET /v1/domains/{id}` returned it at the time of the event.
#[derive(utoipa::ToSchema)]
pub struct DomainEventPayload {
    #[schema(value_type = String, format = Uuid)]
    id: uuid::Uuid,
    #[schema(rename = "type", example = "domain.created")]
    r#type: String,
    timestamp: DateTime<Utc>,
    data: DomainView,
}

/// `certificate.issued`, `certificate.renewed`.
#[derive(utoipa::ToSchema)]
pub struct CertificateIssuedData {
    hostname: String,
    issuer: String,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
}

/// `certificate.failed`: the order failed for good.
#[derive(utoipa::ToSchema)]
pub struct CertificateFailedData {
    hostname: String,
    error: String,
}

/// `certificate.*` events; `data` is [`CertificateIssuedData`] or [`CertificateFailedData`].
#[derive(utoipa::ToSchema)]
pub struct CertificateEventPayload {
    #[schema(value_type = String, format = Uuid)]
    id: uuid::Uuid,
    #[schema(rename = "type", example = "certificate.issued")]
    r#type: String,
    timestamp: DateTime<Utc>,
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// `webhook_endpoint.disabled`: an endpoint answered 410 Gone or failed
/// continuously for the configured time (5 days); `data` is the endpoint,
/// with `disabled_reason` `gone` or `failing`.
#[derive(utoipa::ToSchema)]
pub struct EndpointDisabledEventPayload {
    #[schema(value_type = String, format = Uuid)]
    id: uuid::Uuid,
    #[schema(rename = "type", example = "webhook_endpoint.disabled")]
    r#type: String,
    timestamp: DateTime<Utc>,
    data: EndpointView,
}

#[derive(utoipa::ToSchema)]
pub struct WebhookTestData {
    #[schema(value_type = String, format = Uuid)]
    endpoint_id: uuid::Uuid,
    message: String,
}

/// `webhook.test`, sent by `POST /v1/webhook-endpoints/{id}/test`.
#[derive(utoipa::ToSchema)]
pub struct WebhookTestEventPayload {
    #[schema(value_type = String, format = Uuid)]
    id: uuid::Uuid,
    #[schema(rename = "type", example = "webhook.test")]
    r#type: String,
    timestamp: DateTime<Utc>,
    data: WebhookTestData,
}

/// `health.degraded`, `health.recovered`: a repair run about one of the
/// tenant's domains (`docs/health.md`).
#[derive(utoipa::ToSchema)]
pub struct HealthEventPayload {
    #[schema(value_type = String, format = Uuid)]
    id: uuid::Uuid,
    #[schema(rename = "type", example = "health.degraded")]
    r#type: String,
    timestamp: DateTime<Utc>,
    data: HealthEventData,
}

/// `data` of `health.degraded` (a repair run about the domain told the
/// tenant) and `health.recovered` (that run closed because the check passed
/// again). See `GET /v1/domains/{id}/repairs` for the run's steps.
#[derive(utoipa::ToSchema)]
pub struct HealthEventData {
    #[schema(value_type = String, format = Uuid)]
    run_id: uuid::Uuid,
    /// `certificate`, `upstream` or `dns`.
    #[schema(example = "upstream")]
    kind: String,
    #[schema(example = "shop.example.com")]
    hostname: String,
    /// The failing check's words when the run opened.
    #[schema(example = "little traffic; connecting to 10.0.0.5:443 failed: connection refused")]
    reason: String,
    /// For `health.recovered`, what the passing check saw.
    detail: String,
    opened_at: DateTime<Utc>,
}
