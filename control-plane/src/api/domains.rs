//! `/v1/domains`: add, list, read, change and delete custom domains, run a DNS
//! check on demand, and bulk-create up to 1,000 at once.

use super::AppState;
use super::domain_input::{self, CreateDomain, UpdateDomain};
use super::error::{ApiError, FieldError, Problem};
use super::extract::{JsonBody, TenantAuth};
use super::pagination::{Page, PageParams};
use crate::db;
use crate::db::config::ConfigKey;
use crate::db::domains::{DomainRecord, ListFilter, NewDomain};
use crate::db::events::EventType;
use crate::db::tenants::Tenant;
use crate::dns::{Diagnosis, DnsRecord};
use crate::domain_status::DomainStatus;
use crate::ids::DomainId;
use crate::settings::Settings;
use crate::verification;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub const MAX_BATCH: usize = 1000;

/// A domain as the API shows it (and as events carry it).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DomainView {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    pub hostname: String,
    pub status: DomainStatus,
    pub targets: Vec<String>,
    pub target_tls: bool,
    pub keep_host: bool,
    pub redirects: Vec<String>,
    pub tls: TlsView,
    #[schema(value_type = Object)]
    pub custom_metadata: serde_json::Value,
    pub verification: VerificationView,
    /// The last DNS diagnosis, if any check has run.
    pub dns: Option<Diagnosis>,
    pub dns_checked_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TlsView {
    /// `none`, `pending`, `issuing`, `active`, `renewing` or `failed`.
    pub status: String,
    pub on_demand: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerificationView {
    /// The DNS records to create: one to route traffic to the platform, one TXT to prove ownership.
    pub records: Vec<DnsRecord>,
}

impl DomainView {
    pub fn new(settings: &Settings, d: &DomainRecord) -> Self {
        DomainView {
            id: d.id,
            hostname: d.hostname.clone(),
            status: DomainStatus::parse(&d.status).unwrap_or(DomainStatus::Pending),
            targets: d.targets.clone(),
            target_tls: d.target_tls,
            keep_host: d.keep_host,
            redirects: d.redirects.clone(),
            tls: TlsView {
                status: d.tls_status.clone(),
                on_demand: d.tls_on_demand,
            },
            custom_metadata: d.custom_metadata.clone(),
            verification: VerificationView {
                records: verification::expected_for(settings, d).records(),
            },
            dns: d
                .dns_diagnosis
                .clone()
                .and_then(|v| serde_json::from_value(v).ok()),
            dns_checked_at: d.dns_checked_at,
            verified_at: d.verified_at,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The domain's DNS state: what `verify` ran and `dns` shows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DnsView {
    pub status: DomainStatus,
    pub checked_at: Option<DateTime<Utc>>,
    pub diagnosis: Option<Diagnosis>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Up to 1,000 domains.
    pub items: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResult {
    pub index: usize,
    /// The HTTP status this item would have had on its own (201, 409, 422, 403).
    pub status: u16,
    pub domain: Option<DomainView>,
    pub error: Option<Problem>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResponse {
    pub created: usize,
    pub failed: usize,
    pub results: Vec<BatchResult>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
    /// Only domains in this status.
    pub status: Option<DomainStatus>,
    /// Only hostnames starting with this prefix.
    pub hostname_prefix: Option<String>,
}

#[utoipa::path(post, path = "/v1/domains", tag = "domains", request_body = CreateDomain,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replay-safe retries")),
    responses((status = 201, body = DomainView), (status = 409, body = Problem, description = "hostname already claimed"),
              (status = 422, body = Problem), (status = 403, body = Problem, description = "domain quota reached"),
              (status = 401, body = Problem), (status = 429, body = Problem)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    auth: TenantAuth,
    JsonBody(input): JsonBody<CreateDomain>,
) -> Result<(StatusCode, Json<DomainView>), ApiError> {
    let parsed = domain_input::parse_new(input, &state.settings, auth.tenant.plan, "")
        .map_err(ApiError::from_fields)?;
    let mut results = insert_batch(&state, &auth.tenant, vec![Ok(parsed)]).await?;
    match results.pop() {
        Some(Ok(view)) => Ok((StatusCode::CREATED, Json(view))),
        Some(Err(e)) => Err(e),
        None => Err(ApiError::Internal(anyhow::anyhow!(
            "batch insert returned no result"
        ))),
    }
}

#[utoipa::path(post, path = "/v1/domains:batch", tag = "domains", request_body = BatchRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replay-safe retries")),
    responses((status = 200, body = BatchResponse, description = "per-item results; partial success is normal"),
              (status = 422, body = Problem), (status = 401, body = Problem), (status = 413, body = Problem)),
    security(("api_key" = [])))]
pub async fn create_batch(
    State(state): State<AppState>,
    auth: TenantAuth,
    JsonBody(input): JsonBody<BatchRequest>,
) -> Result<Json<BatchResponse>, ApiError> {
    if input.items.is_empty() || input.items.len() > MAX_BATCH {
        return Err(ApiError::field(
            "items",
            "batch_size",
            format!("give between 1 and {MAX_BATCH} items"),
        ));
    }
    let parsed: Vec<Result<NewDomain, ApiError>> = input
        .items
        .into_iter()
        .enumerate()
        .map(|(i, raw)| parse_batch_item(&state.settings, &auth.tenant, i, raw))
        .collect();
    let outcomes = insert_batch(&state, &auth.tenant, parsed).await?;
    let mut response = BatchResponse {
        created: 0,
        failed: 0,
        results: Vec::with_capacity(outcomes.len()),
    };
    for (index, outcome) in outcomes.into_iter().enumerate() {
        let result = match outcome {
            Ok(view) => {
                response.created += 1;
                BatchResult {
                    index,
                    status: 201,
                    domain: Some(view),
                    error: None,
                }
            }
            Err(e) => {
                response.failed += 1;
                let problem = e.problem();
                BatchResult {
                    index,
                    status: problem.status,
                    domain: None,
                    error: Some(problem),
                }
            }
        };
        response.results.push(result);
    }
    Ok(Json(response))
}

fn parse_batch_item(
    settings: &Settings,
    tenant: &Tenant,
    i: usize,
    raw: serde_json::Value,
) -> Result<NewDomain, ApiError> {
    let prefix = format!("items[{i}].");
    let bytes = serde_json::to_vec(&raw).unwrap_or_default();
    let input: CreateDomain = super::extract::parse_json(&bytes).map_err(|e| match e {
        ApiError::Validation { errors, .. } => ApiError::from_fields(
            errors
                .into_iter()
                .map(|f| FieldError {
                    field: format!("{prefix}{}", f.field.trim_start_matches('.')),
                    ..f
                })
                .collect(),
        ),
        other => other,
    })?;
    domain_input::parse_new(input, settings, tenant.plan, &prefix).map_err(ApiError::from_fields)
}

/// Inserts the valid items within the tenant's quota in one transaction,
/// with one `domain.created` event each; returns one outcome per input.
async fn insert_batch(
    state: &AppState,
    tenant: &Tenant,
    items: Vec<Result<NewDomain, ApiError>>,
) -> Result<Vec<Result<DomainView, ApiError>>, ApiError> {
    let quota = state.settings.limits.quota_for(tenant.plan);
    let mut tx = state.pool.begin().await?;
    // A quota serialises a tenant's inserts (tenant row lock, then count);
    // unlimited plans skip both, so their creates run in parallel.
    let (existing, mut room) = if quota == 0 {
        (0, u64::MAX)
    } else {
        db::tenants::lock(&mut *tx, tenant.id).await?;
        let n = db::domains::count_for_tenant(&mut *tx, tenant.id).await?;
        let existing = u64::try_from(n).unwrap_or(0);
        (existing, quota.saturating_sub(existing))
    };
    let mut seen = HashSet::new();
    let mut outcomes: Vec<Result<String, ApiError>> = Vec::with_capacity(items.len());
    let mut to_insert = Vec::new();
    for item in items {
        outcomes.push(match item {
            Err(e) => Err(e),
            Ok(d) if !seen.insert(d.hostname.clone()) => Err(taken()),
            Ok(_) if room == 0 => Err(ApiError::QuotaExceeded(format!(
                "the {} plan allows {quota} domains and this account has {existing}; delete some or upgrade",
                tenant.plan.as_str()
            ))),
            Ok(d) => {
                room -= 1;
                let hostname = d.hostname.clone();
                to_insert.push(d);
                Ok(hostname)
            }
        });
    }
    let inserted = db::domains::insert_many(&mut *tx, tenant.id, &to_insert).await?;
    let views: Vec<DomainView> = inserted
        .iter()
        .map(|d| DomainView::new(&state.settings, d))
        .collect();
    let subjects: Vec<uuid::Uuid> = views.iter().map(|v| v.id).collect();
    let data: Vec<serde_json::Value> = views.iter().map(DomainView::to_json).collect();
    db::events::append_many(
        &mut *tx,
        tenant.id,
        EventType::DomainCreated,
        &subjects,
        &data,
    )
    .await?;
    let keys: Vec<ConfigKey> = inserted
        .iter()
        .map(|d| ConfigKey::Host(d.hostname.clone()))
        .collect();
    db::config::publish(&mut tx, &keys).await?;
    tx.commit().await?;
    let mut by_host: std::collections::HashMap<String, DomainView> =
        views.into_iter().map(|v| (v.hostname.clone(), v)).collect();
    Ok(outcomes
        .into_iter()
        .map(|o| o.and_then(|host| by_host.remove(&host).ok_or_else(taken)))
        .collect())
}

fn taken() -> ApiError {
    ApiError::Conflict("this hostname is already claimed".into())
}

#[utoipa::path(get, path = "/v1/domains", tag = "domains", params(ListParams),
    responses((status = 200, body = Page<DomainView>), (status = 400, body = Problem), (status = 401, body = Problem)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    auth: TenantAuth,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page<DomainView>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (after, limit) = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .parse()?;
    let filter = ListFilter {
        status: params.status.map(|s| s.as_str().to_string()),
        hostname_prefix: params.hostname_prefix.map(|p| p.to_ascii_lowercase()),
    };
    let rows = db::domains::list(&state.pool, auth.tenant.id, &filter, after, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |d| d.id,
        |d| DomainView::new(&state.settings, d),
    )))
}

#[utoipa::path(get, path = "/v1/domains/{id}", tag = "domains", params(("id" = String, Path)),
    responses((status = 200, body = DomainView), (status = 404, body = Problem), (status = 401, body = Problem)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
) -> Result<Json<DomainView>, ApiError> {
    let d = find(&state, &auth, &id).await?;
    Ok(Json(DomainView::new(&state.settings, &d)))
}

#[utoipa::path(patch, path = "/v1/domains/{id}", tag = "domains", params(("id" = String, Path)), request_body = UpdateDomain,
    responses((status = 200, body = DomainView), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<UpdateDomain>,
) -> Result<Json<DomainView>, ApiError> {
    let id = parse_id(&id)?;
    let changes =
        domain_input::parse_changes(input, &state.settings).map_err(ApiError::from_fields)?;
    let mut tx = state.pool.begin().await?;
    let d = db::domains::update(&mut *tx, auth.tenant.id, id, &changes)
        .await?
        .ok_or(ApiError::NotFound("domain"))?;
    if changes.affects_routing() {
        db::config::publish(&mut tx, &[ConfigKey::Host(d.hostname.clone())]).await?;
    }
    tx.commit().await?;
    Ok(Json(DomainView::new(&state.settings, &d)))
}

#[utoipa::path(delete, path = "/v1/domains/{id}", tag = "domains", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let mut tx = state.pool.begin().await?;
    let d = db::domains::delete(&mut *tx, auth.tenant.id, id)
        .await?
        .ok_or(ApiError::NotFound("domain"))?;
    let data = DomainView::new(&state.settings, &d).to_json();
    db::events::append(
        &mut *tx,
        auth.tenant.id,
        EventType::DomainDeleted,
        d.id,
        &data,
    )
    .await?;
    db::config::publish(&mut tx, &ConfigKey::both(&d.hostname)).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/domains/{id}/verify", tag = "domains", params(("id" = String, Path)),
    responses((status = 200, body = DnsView, description = "the check ran; see `diagnosis`"), (status = 404, body = Problem)),
    security(("api_key" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
) -> Result<Json<DnsView>, ApiError> {
    let d = find(&state, &auth, &id).await?;
    let checked = verification::check_domain(
        &state.pool,
        &state.settings,
        &state.dns,
        DomainId::from_uuid(d.id),
    )
    .await?
    .ok_or(ApiError::NotFound("domain"))?;
    Ok(Json(DnsView {
        status: DomainStatus::parse(&checked.domain.status).unwrap_or(DomainStatus::Pending),
        checked_at: checked.domain.dns_checked_at,
        diagnosis: Some(checked.diagnosis),
    }))
}

#[utoipa::path(get, path = "/v1/domains/{id}/dns", tag = "domains", params(("id" = String, Path)),
    responses((status = 200, body = DnsView), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn dns(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
) -> Result<Json<DnsView>, ApiError> {
    let d = find(&state, &auth, &id).await?;
    let view = DomainView::new(&state.settings, &d);
    Ok(Json(DnsView {
        status: view.status,
        checked_at: view.dns_checked_at,
        diagnosis: view.dns,
    }))
}

/// Malformed ids are simply not found: ids are opaque to callers.
fn parse_id(id: &str) -> Result<DomainId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound("domain"))
}

async fn find(state: &AppState, auth: &TenantAuth, id: &str) -> Result<DomainRecord, ApiError> {
    db::domains::get(&state.pool, auth.tenant.id, parse_id(id)?)
        .await?
        .ok_or(ApiError::NotFound("domain"))
}
