//! A domain's certificate (metadata only: no API ever returns a private
//! key), a forced renewal, and the operator's view of the ACME budget.

use super::AppState;
use super::error::{ApiError, Problem};
use super::extract::{OperatorAuth, TenantAuth};
use crate::db;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertificateView {
    /// `none`, `issuing`, `active`, `renewing` or `failed`.
    pub status: String,
    /// Present once a certificate is stored.
    pub current: Option<CurrentCertificate>,
    /// The order in progress or the last one, if any.
    pub order: Option<OrderView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CurrentCertificate {
    pub names: Vec<String>,
    /// `dev-ca` or the ACME directory URL.
    pub issuer: String,
    pub not_before: Option<DateTime<Utc>>,
    pub not_after: DateTime<Utc>,
    /// When the renewal is due to be ordered.
    pub renew_at: Option<DateTime<Utc>>,
    pub issued_at: DateTime<Utc>,
    /// The chain, PEM, leaf first (public data).
    pub chain_pem: String,
    /// What the CA last said about renewing it (ACME Renewal Information);
    /// absent when the CA has none.
    pub renewal_info: Option<RenewalInfoView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RenewalInfoView {
    /// The CA's suggested renewal window.
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// The CA's page explaining an unusual window (an incident), if any.
    pub explanation_url: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    /// `queued`, `issuing`, `deferred`, `failed` or `done`.
    pub status: String,
    /// `new`, `on_demand`, `renewal` or `forced`.
    pub reason: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

async fn view(
    state: &AppState,
    auth: &TenantAuth,
    id: &str,
) -> Result<(uuid::Uuid, CertificateView), ApiError> {
    let id = id.parse().map_err(|_| ApiError::NotFound("domain"))?;
    let d = db::domains::get(&state.pool, auth.tenant.id, id)
        .await?
        .ok_or(ApiError::NotFound("domain"))?;
    let current = db::certificates::info(&state.pool, d.id)
        .await?
        .map(|c| CurrentCertificate {
            names: c.names,
            issuer: c.issuer,
            not_before: c.not_before,
            not_after: c.not_after,
            renew_at: c.renew_at,
            issued_at: c.created_at,
            chain_pem: c.chain_pem,
            renewal_info: c.ari_window_start.zip(c.ari_window_end).map(
                |(window_start, window_end)| RenewalInfoView {
                    window_start,
                    window_end,
                    explanation_url: c.ari_explanation_url,
                    checked_at: c.ari_checked_at,
                },
            ),
        });
    let order = db::orders::get(&state.pool, d.id)
        .await?
        .map(|o| OrderView {
            status: o.status,
            reason: o.reason,
            attempts: o.attempts,
            next_attempt_at: o.next_attempt_at,
            last_error: o.last_error,
        });
    Ok((
        d.id,
        CertificateView {
            status: d.tls_status,
            current,
            order,
        },
    ))
}

#[utoipa::path(get, path = "/v1/domains/{id}/certificate", tag = "domains", params(("id" = String, Path)),
    responses((status = 200, body = CertificateView), (status = 404, body = Problem)), security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
) -> Result<Json<CertificateView>, ApiError> {
    Ok(Json(view(&state, &auth, &id).await?.1))
}

#[utoipa::path(post, path = "/v1/domains/{id}/certificate/renew", tag = "domains", params(("id" = String, Path)),
    responses((status = 202, body = CertificateView), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("api_key" = [])))]
pub async fn renew(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<CertificateView>), ApiError> {
    let (domain, before) = view(&state, &auth, &id).await?;
    if before.current.is_none() {
        return Err(ApiError::Conflict("the domain has no certificate yet; it is issued on the first request or once DNS is verified".into()));
    }
    if let Some(o) = &before.order
        && (o.status == "issuing" || o.status == "queued")
    {
        return Err(ApiError::Conflict(
            "an order for this domain is already in progress".into(),
        ));
    }
    if before
        .current
        .as_ref()
        .is_some_and(|c| Utc::now() - c.issued_at < chrono::Duration::hours(1))
    {
        return Err(ApiError::Conflict(
            "the certificate is less than an hour old; forced renewals are limited to one per hour"
                .into(),
        ));
    }
    let mut tx = state.pool.begin().await?;
    db::orders::request(&mut tx, domain, "forced").await?;
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(view(&state, &auth, &id).await?.1),
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AcmeView {
    /// Orders by status.
    #[schema(value_type = Object)]
    pub orders: serde_json::Value,
    /// Per directory: orders in the last 3 hours, issued and failed validations in the last day.
    #[schema(value_type = Object)]
    pub directories: serde_json::Value,
    /// The limits the budget enforces.
    #[schema(value_type = Object)]
    pub limits: serde_json::Value,
}

#[utoipa::path(get, path = "/v1/ops/acme", tag = "ops",
    responses((status = 200, body = AcmeView), (status = 401, body = Problem)), security(("operator_token" = [])))]
pub async fn ops(
    State(state): State<AppState>,
    _op: OperatorAuth,
) -> Result<Json<AcmeView>, ApiError> {
    let (orders, directories) = db::orders::overview(&state.pool).await?;
    let c = &state.settings.certificates;
    Ok(Json(AcmeView {
        orders,
        directories,
        limits: serde_json::json!({
            "orders_per_3h": c.orders_per_3h,
            "certificates_per_registered_domain_per_week": c.certs_per_domain_week,
            "failed_validations_per_host_per_hour": c.failed_validations_per_host_hour,
        }),
    }))
}
