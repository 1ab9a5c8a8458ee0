//! Tenants (operator only) and a tenant's own API keys.

use super::AppState;
use super::error::{ApiError, Problem};
use super::extract::{JsonBody, OperatorAuth, TenantAuth};
use super::middleware::SecretBearing;
use crate::api_key::NewApiKey;
use crate::db;
use crate::db::api_keys::ApiKeyInfo;
use crate::db::tenants::{Plan, Tenant};
use crate::ids::{ApiKeyId, TenantId};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
    #[serde(default)]
    pub plan: Option<Plan>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedTenant {
    pub tenant: Tenant,
    pub api_key: CreatedApiKey,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label to tell keys apart, e.g. `ci` or `production`.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// The full key. Shown only in this response; store it now.
    pub key: String,
}

/// Creates a tenant with its first API key (used by the API and the CLI).
pub async fn create_tenant(
    pool: &PgPool,
    name: &str,
    plan: Plan,
) -> Result<CreatedTenant, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::field(
            "name",
            "invalid_length",
            "name must be 1 to 200 characters",
        ));
    }
    let mut tx = pool.begin().await?;
    let tenant = db::tenants::insert(&mut *tx, name, plan).await?;
    let api_key = insert_key(&mut tx, tenant.id, "default").await?;
    tx.commit().await?;
    Ok(CreatedTenant { tenant, api_key })
}

async fn insert_key(
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    name: &str,
) -> Result<CreatedApiKey, ApiError> {
    let key = NewApiKey::generate();
    let info = db::api_keys::insert(&mut *tx, tenant, name, &key.prefix, &key.hash).await?;
    Ok(CreatedApiKey {
        info,
        key: key.token.expose().clone(),
    })
}

#[utoipa::path(post, path = "/v1/tenants", tag = "operator", request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("operator_token" = [])))]
pub async fn create(
    State(state): State<AppState>,
    _op: OperatorAuth,
    JsonBody(input): JsonBody<CreateTenant>,
) -> Result<(StatusCode, Extension<SecretBearing>, Json<CreatedTenant>), ApiError> {
    let created = create_tenant(&state.pool, &input.name, input.plan.unwrap_or(Plan::Free)).await?;
    // The response shows a secret: its Idempotency-Key copy is sealed.
    Ok((StatusCode::CREATED, Extension(SecretBearing), Json(created)))
}

#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "operator", params(("id" = String, Path)),
    responses((status = 200, body = Tenant), (status = 404, body = Problem), (status = 401, body = Problem)),
    security(("operator_token" = [])))]
pub async fn get(
    State(state): State<AppState>,
    _op: OperatorAuth,
    Path(id): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    let id: TenantId = id.parse().map_err(|_| ApiError::NotFound("tenant"))?;
    let t = db::tenants::get(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    Ok(Json(t))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    /// `active` or `suspended`. A suspended tenant's API keys stop working
    /// and every edge stops serving its domains.
    pub status: TenantStatus,
}

#[derive(Clone, Copy, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Suspended,
}

#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "operator", params(("id" = String, Path)),
    request_body = UpdateTenant,
    responses((status = 200, body = Tenant), (status = 404, body = Problem), (status = 401, body = Problem)),
    security(("operator_token" = [])))]
pub async fn update(
    State(state): State<AppState>,
    _op: OperatorAuth,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<UpdateTenant>,
) -> Result<Json<Tenant>, ApiError> {
    let id: TenantId = id.parse().map_err(|_| ApiError::NotFound("tenant"))?;
    let status = match input.status {
        TenantStatus::Active => "active",
        TenantStatus::Suspended => "suspended",
    };
    let mut tx = state.pool.begin().await?;
    let (tenant, changed) = db::tenants::set_status(&mut *tx, id, status)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    if changed {
        db::config::publish_tenant(&mut tx, id.as_uuid()).await?;
    }
    tx.commit().await?;
    Ok(Json(tenant))
}

#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 401, body = Problem)), security(("api_key" = [])))]
pub async fn create_key(
    State(state): State<AppState>,
    auth: TenantAuth,
    JsonBody(input): JsonBody<CreateApiKey>,
) -> Result<(StatusCode, Extension<SecretBearing>, Json<CreatedApiKey>), ApiError> {
    let name = input.name.unwrap_or_default();
    if name.chars().count() > 100 {
        return Err(ApiError::field(
            "name",
            "too_long",
            "name must be at most 100 characters",
        ));
    }
    let mut conn = state.pool.acquire().await?;
    let created = insert_key(&mut conn, auth.tenant.id, &name).await?;
    // The response shows a secret: its Idempotency-Key copy is sealed.
    Ok((StatusCode::CREATED, Extension(SecretBearing), Json(created)))
}

#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys",
    responses((status = 200, body = Vec<ApiKeyInfo>), (status = 401, body = Problem)), security(("api_key" = [])))]
pub async fn list_keys(
    State(state): State<AppState>,
    auth: TenantAuth,
) -> Result<Json<Vec<ApiKeyInfo>>, ApiError> {
    Ok(Json(db::api_keys::list(&state.pool, auth.tenant.id).await?))
}

#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn revoke_key(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: ApiKeyId = id.parse().map_err(|_| ApiError::NotFound("api key"))?;
    if db::api_keys::revoke(&state.pool, auth.tenant.id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("api key"))
    }
}
