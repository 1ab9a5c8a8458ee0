//! `/v1/webhook-endpoints`: register, list, read, change, delete the
//! endpoints a tenant's events are sent to, and rotate their signing
//! secret. The secret is shown only in the responses of create and
//! rotate-secret; it is stored sealed. Another tenant's endpoint is 404.

use super::AppState;
use super::error::{ApiError, Problem};
use super::extract::{JsonBody, TenantAuth};
use super::middleware::SecretBearing;
use super::pagination::{Page, PageParams};
use super::webhook_input::{self, CreateEndpoint, UpdateEndpoint};
use crate::db;
use crate::db::webhooks::{EndpointRecord, NewEndpoint};
use crate::webhooks::signature::SigningSecret;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// An endpoint as the API shows it (never with its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointView {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub url: String,
    pub description: String,
    /// Empty: every event type.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Why a disabled endpoint is disabled: `manual`, `gone` (it answered
    /// 410) or `failing` (every attempt failed for the configured time).
    pub disabled_reason: Option<String>,
    /// Start of the current run of failed attempts, if one is running.
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the secret before the last rotation still signs.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EndpointView {
    pub fn new(e: &EndpointRecord) -> EndpointView {
        EndpointView {
            id: e.id,
            url: e.url.clone(),
            description: e.description.clone(),
            event_types: e.event_types.clone(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason.clone(),
            failing_since: e.failing_since,
            previous_secret_expires_at: e.previous_secret_expires_at,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The answer to create and rotate-secret: the endpoint and its secret,
/// shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointWithSecret {
    pub endpoint: EndpointView,
    /// `whsec_` + base64 of 32 random bytes; verify signatures with it.
    pub secret: String,
}

#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "webhooks", request_body = CreateEndpoint,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replay-safe retries")),
    responses((status = 201, body = EndpointWithSecret), (status = 422, body = Problem, description = "bad field, or a URL that resolves to a forbidden address"),
              (status = 403, body = Problem, description = "endpoint limit reached"), (status = 401, body = Problem)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    auth: TenantAuth,
    JsonBody(input): JsonBody<CreateEndpoint>,
) -> Result<
    (
        StatusCode,
        Extension<SecretBearing>,
        Json<EndpointWithSecret>,
    ),
    ApiError,
> {
    let (url, changes) = webhook_input::parse_new(input, state.settings.webhooks.allow_http)
        .map_err(ApiError::from_fields)?;
    check_address(&state, &url).await?;
    let id = Uuid::now_v7();
    let secret = SigningSecret::generate();
    let sealed = state.webhooks.seal(id, &secret).map_err(no_key)?;
    let new = NewEndpoint {
        id,
        url: url.to_string(),
        description: changes.description.unwrap_or_default(),
        event_types: changes.event_types.unwrap_or_default(),
        enabled: changes.enabled.unwrap_or(true),
        secret: sealed,
    };
    let max = state.settings.webhooks.max_endpoints_per_tenant;
    let mut tx = state.pool.begin().await?;
    db::tenants::lock(&mut *tx, auth.tenant.id).await?;
    if db::webhooks::count_for_tenant(&mut *tx, auth.tenant.id).await? >= max {
        return Err(ApiError::QuotaExceeded(format!(
            "an account may have {max} webhook endpoints; delete one first"
        )));
    }
    let e = db::webhooks::insert(&mut *tx, auth.tenant.id, &new).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Extension(SecretBearing),
        Json(with_secret(&e, &secret)),
    ))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "webhooks", params(PageParams),
    responses((status = 200, body = Page<EndpointView>), (status = 401, body = Problem)), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    auth: TenantAuth,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Page<EndpointView>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (after, limit) = params.parse()?;
    let rows = db::webhooks::list(&state.pool, auth.tenant.id, after, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |e| e.id,
        EndpointView::new,
    )))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = EndpointView), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, ApiError> {
    Ok(Json(EndpointView::new(&find(&state, &auth, &id).await?)))
}

#[utoipa::path(patch, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", params(("id" = String, Path)), request_body = UpdateEndpoint,
    responses((status = 200, body = EndpointView), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<UpdateEndpoint>,
) -> Result<Json<EndpointView>, ApiError> {
    let id = parse_id(&id)?;
    let (url, changes) = webhook_input::parse_changes(input, state.settings.webhooks.allow_http)
        .map_err(ApiError::from_fields)?;
    if let Some(url) = &url {
        check_address(&state, url).await?;
    }
    let e = db::webhooks::update(&state.pool, auth.tenant.id, id, &changes)
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))?;
    Ok(Json(EndpointView::new(&e)))
}

#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204, description = "deleted with its messages"), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    if db::webhooks::delete(&state.pool, auth.tenant.id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("webhook endpoint"))
    }
}

/// A new secret; the old one keeps signing (alongside) for the overlap
/// (24 h by default), so receivers can switch without losing a message.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = EndpointWithSecret), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
) -> Result<(Extension<SecretBearing>, Json<EndpointWithSecret>), ApiError> {
    let id = parse_id(&id)?;
    let secret = SigningSecret::generate();
    let sealed = state.webhooks.seal(id, &secret).map_err(no_key)?;
    let overlap = state.settings.webhooks.secret_overlap;
    let e = db::webhooks::rotate_secret(&state.pool, auth.tenant.id, id, &sealed, overlap)
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))?;
    Ok((Extension(SecretBearing), Json(with_secret(&e, &secret))))
}

fn with_secret(e: &EndpointRecord, secret: &SigningSecret) -> EndpointWithSecret {
    EndpointWithSecret {
        endpoint: EndpointView::new(e),
        secret: secret.to_whsec().expose().clone(),
    }
}

/// The SSRF guard at creation: the host must be (or resolve to) public addresses.
async fn check_address(state: &AppState, url: &url::Url) -> Result<(), ApiError> {
    state
        .webhooks
        .guard
        .check(url)
        .await
        .map(|_| ())
        .map_err(|r| ApiError::field("url", r.code, r.message))
}

fn no_key(e: crate::crypto::CryptoError) -> ApiError {
    tracing::error!(error = %e, "cannot seal a webhook secret");
    ApiError::Unavailable(
        "webhook secrets cannot be stored: the operator has not configured PORTICO_ENCRYPTION_KEYS"
            .into(),
    )
}

/// Malformed ids are simply not found: ids are opaque to callers.
pub fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound("webhook endpoint"))
}

pub async fn find(
    state: &AppState,
    auth: &TenantAuth,
    id: &str,
) -> Result<EndpointRecord, ApiError> {
    db::webhooks::get(&state.pool, auth.tenant.id, parse_id(id)?)
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))
}
