//! Edges: the operator's registry (`/v1/ops/edges`) and the internal
//! endpoints edges call with their own token (`/internal/v1/edge/*`): the
//! config stream, heartbeats, on-demand certificate requests and challenge
//! answers for edges whose stream lags.

use super::AppState;
use super::error::{ApiError, Problem};
use super::extract::{JsonBody, OperatorAuth, bearer};
use super::middleware::SecretBearing;
use crate::api_key::{EDGE_SCHEME, NewApiKey, PresentedKey};
use crate::db;
use crate::db::edges::{EdgeRecord, HeartbeatRecord};
use crate::ids::EdgeId;
use crate::publish::{frames, stream};
use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use portico_protocol::{CertificateRequest, Heartbeat};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEdge {
    /// Unique, lowercase letters, digits and `-`, up to 63 (e.g. `fra-1`).
    pub name: String,
    /// Region code, lowercase letters, digits and `-`, up to 32 (e.g. `fra`).
    pub region: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedEdge {
    pub edge: EdgeView,
    /// The edge's token (`pte_...`). Shown only here; give it to the edge
    /// as `PORTICO_EDGE_TOKEN`.
    pub token: String,
}

/// An edge as operators see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EdgeView {
    pub id: uuid::Uuid,
    pub name: String,
    pub region: String,
    /// `never_seen`, `up` (heartbeat within `PORTICO_EDGE_STALE_AFTER_SECS`) or `stale`.
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Config version the edge last said it serves.
    pub applied_version: Option<u64>,
    /// Current config version minus the applied one.
    pub lag: Option<u64>,
    pub build: Option<String>,
    pub uptime_secs: Option<i64>,
    pub hosts: Option<i64>,
    pub certificates: Option<i64>,
    #[schema(value_type = Object)]
    pub counters: serde_json::Value,
    /// The last config the edge refused, with the reason, until it applies a later one.
    #[schema(value_type = Option<Object>)]
    pub rejection: Option<serde_json::Value>,
}

impl EdgeView {
    pub(crate) fn new(r: EdgeRecord, current: u64, stale_after: std::time::Duration) -> Self {
        let applied = r.applied_version.map(db::config::as_u64);
        EdgeView {
            status: heartbeat_status(r.last_seen_at, stale_after),
            id: r.id,
            name: r.name,
            region: r.region,
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
            applied_version: applied,
            lag: applied.map(|a| current.saturating_sub(a)),
            build: r.build,
            uptime_secs: r.uptime_secs,
            hosts: r.hosts,
            certificates: r.certificates,
            counters: r.counters,
            rejection: r.rejection,
        }
    }
}

/// `never_seen`, `up` (heartbeat within `stale_after`) or `stale`.
pub(crate) fn heartbeat_status(
    last_seen_at: Option<DateTime<Utc>>,
    stale_after: std::time::Duration,
) -> &'static str {
    let stale_after = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
    match last_seen_at {
        None => "never_seen",
        Some(t) if Utc::now() - t > stale_after => "stale",
        Some(_) => "up",
    }
}

/// Registers an edge and returns its token (used by the API and the CLI).
pub async fn create_edge(pool: &PgPool, name: &str, region: &str) -> Result<CreatedEdge, ApiError> {
    let label = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !label(name, 63) {
        return Err(ApiError::field(
            "name",
            "invalid_name",
            "1-63 lowercase letters, digits or '-', not starting with '-'",
        ));
    }
    if !label(region, 32) {
        return Err(ApiError::field(
            "region",
            "invalid_region",
            "1-32 lowercase letters, digits or '-', not starting with '-'",
        ));
    }
    let token = NewApiKey::generate_with(EDGE_SCHEME);
    let record = db::edges::insert(pool, name, region, &token.prefix, &token.hash)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("an edge named {name:?} exists")))?;
    let current = db::config::state(pool).await?.version;
    Ok(CreatedEdge {
        edge: EdgeView::new(record, current, std::time::Duration::MAX),
        token: token.token.expose().clone(),
    })
}

#[utoipa::path(post, path = "/v1/ops/edges", tag = "ops", request_body = CreateEdge,
    responses((status = 201, body = CreatedEdge), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("operator_token" = [])))]
pub async fn create(
    State(state): State<AppState>,
    _op: OperatorAuth,
    JsonBody(input): JsonBody<CreateEdge>,
) -> Result<(StatusCode, Extension<SecretBearing>, Json<CreatedEdge>), ApiError> {
    let created = create_edge(&state.pool, &input.name, &input.region).await?;
    // The response shows a secret: its Idempotency-Key copy is sealed.
    Ok((StatusCode::CREATED, Extension(SecretBearing), Json(created)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EdgeList {
    /// The current config version.
    pub config_version: u64,
    pub edges: Vec<EdgeView>,
}

#[utoipa::path(get, path = "/v1/ops/edges", tag = "ops",
    responses((status = 200, body = EdgeList), (status = 401, body = Problem)),
    security(("operator_token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _op: OperatorAuth,
) -> Result<Json<EdgeList>, ApiError> {
    let current = db::config::state(&state.pool).await?.version;
    let stale = state.settings.config.edge_stale_after;
    let edges = db::edges::list(&state.pool)
        .await?
        .into_iter()
        .map(|r| EdgeView::new(r, current, stale))
        .collect();
    Ok(Json(EdgeList {
        config_version: current,
        edges,
    }))
}

/// A caller authenticated by an edge token.
pub struct EdgeAuth {
    pub id: EdgeId,
    pub name: String,
}

impl FromRequestParts<AppState> for EdgeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized(
            "missing credentials: send `Authorization: Bearer <edge token>`",
        ))?;
        let invalid = ApiError::Unauthorized("the edge token is invalid or revoked");
        let presented = PresentedKey::parse_with(token, EDGE_SCHEME)
            .map_err(|_| ApiError::Unauthorized("the edge token is malformed"))?;
        let found = db::edges::find_for_auth(&state.pool, &presented.prefix)
            .await?
            .ok_or(invalid)?;
        if !presented.matches(&found.hash) {
            return Err(ApiError::Unauthorized(
                "the edge token is invalid or revoked",
            ));
        }
        tracing::Span::current().record("edge", tracing::field::display(&found.name));
        Ok(EdgeAuth {
            id: found.id,
            name: found.name,
        })
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConfigParams {
    /// The version the edge has applied; absent for a full snapshot.
    pub since: Option<u64>,
}

/// The config stream: NDJSON frames (snapshot or deltas, then keep-alives).
#[utoipa::path(get, path = "/internal/v1/edge/config", tag = "edge", params(ConfigParams),
    responses((status = 200, description = "application/x-ndjson stream of portico-protocol frames"),
        (status = 401, body = Problem)),
    security(("edge_token" = [])))]
pub async fn config(
    State(state): State<AppState>,
    edge: EdgeAuth,
    params: Result<Query<ConfigParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(stream::BUFFER);
    tracing::info!(edge = %edge.name, since = ?params.since, "config stream opened");
    tokio::spawn(stream::run(
        state.publisher.clone(),
        edge.name,
        params.since,
        tx,
    ));
    let body = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|b| b.map(Ok::<_, std::convert::Infallible>))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// Records what the edge serves; `GET /v1/ops/edges` shows it.
#[utoipa::path(post, path = "/internal/v1/edge/heartbeat", tag = "edge",
    responses((status = 204), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("edge_token" = [])))]
pub async fn heartbeat(
    State(state): State<AppState>,
    edge: EdgeAuth,
    JsonBody(h): JsonBody<Heartbeat>,
) -> Result<StatusCode, ApiError> {
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let build: String = h.build.chars().take(100).collect();
    let counters: serde_json::Map<String, serde_json::Value> = h
        .counters
        .iter()
        .take(100)
        .map(|(k, v)| (k.chars().take(64).collect(), serde_json::Value::from(*v)))
        .collect();
    let rejection = h.rejection.map(|mut r| {
        r.reason = r.reason.chars().take(1000).collect();
        serde_json::to_value(r).unwrap_or_default()
    });
    let record = HeartbeatRecord {
        applied_version: to_i64(h.applied_version.0),
        build: &build,
        uptime_secs: to_i64(h.uptime_secs),
        hosts: to_i64(h.hosts),
        certificates: to_i64(h.certificates),
        counters: serde_json::Value::Object(counters),
        rejection,
        hosts_missing_certificate: h
            .hosts_missing_certificate
            .into_iter()
            .take(portico_protocol::MAX_HOSTS_MISSING_CERTIFICATE)
            .filter(|host| host.len() <= 253)
            .collect(),
    };
    db::edges::record_heartbeat(&state.pool, edge.id, &record).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// On-demand certificate for a host the edge saw in a ClientHello: the
/// stored one if it is good (the edge's stream lags); 403 when the host may
/// not have one (unknown, suspended, not verified, on-demand off, DNS no
/// longer pointing at us); otherwise an order is queued at the front and the
/// answer waits (bounded) for the certificate. 503 when no issuer is
/// configured, the order failed, or it did not finish in time.
#[utoipa::path(post, path = "/internal/v1/edge/certificates/request", tag = "edge",
    responses((status = 200, description = "a portico-protocol CertificateBundle"),
        (status = 403, body = Problem), (status = 503, body = Problem)),
    security(("edge_token" = [])))]
pub async fn request_certificate(
    State(state): State<AppState>,
    _edge: EdgeAuth,
    JsonBody(req): JsonBody<CertificateRequest>,
) -> Result<Response, ApiError> {
    let hostname = req.hostname.trim_end_matches('.').to_ascii_lowercase();
    let refuse = || {
        ApiError::Forbidden(format!(
            "{hostname:?} may not get a certificate on demand: unknown, not verified, or on-demand TLS is off"
        ))
    };
    let domain = db::domains::find_by_hostname(&state.pool, &hostname)
        .await?
        .ok_or_else(refuse)?;
    if !servable_on_demand(&state, &hostname).await? {
        return Err(refuse());
    }
    if let Some(bundle) = stored_bundle(&state, &hostname).await? {
        return Ok(Json(bundle).into_response());
    }
    if matches!(
        state.settings.certificates.issuer,
        crate::settings::IssuerSetting::None
    ) {
        return Err(ApiError::Unavailable(
            "no certificate issuer is configured on this control plane".into(),
        ));
    }
    // A stale DNS verdict is re-checked now, so that a domain pointed away
    // from us never costs the CA a failed validation.
    let stale = domain
        .dns_checked_at
        .is_none_or(|t| Utc::now() - t > chrono::Duration::minutes(10));
    if stale {
        let id = crate::ids::DomainId::from_uuid(domain.id);
        crate::verification::check_domain(&state.pool, &state.settings, &state.dns, id).await?;
        if !servable_on_demand(&state, &hostname).await? {
            return Err(refuse());
        }
    }
    let quota = state.settings.certificates.on_demand_per_tenant_hour;
    if quota > 0
        && db::orders::tenant_orders_last_hour(&state.pool, domain.tenant_id).await? >= quota
    {
        tracing::warn!(host = %hostname, quota, "on-demand issuance refused: the tenant's hourly quota is used up");
        return Err(ApiError::Forbidden(format!(
            "{hostname:?}: this account may cause {quota} certificate orders per hour on demand and has used them all"
        )));
    }
    let mut tx = state.pool.begin().await?;
    db::orders::request(&mut tx, domain.id, "on_demand").await?;
    tx.commit().await?;
    wait_for_certificate(&state, domain.id, &hostname).await
}

/// One ACME challenge answer, for an edge asked by the CA for a token (or
/// an `acme-tls/1` handshake) its config stream has not delivered yet.
/// `kind` is `http-01` (key: the token) or `tls-alpn-01` (key: the
/// hostname); 404 when no such answer is published (it ended, or never was).
#[utoipa::path(get, path = "/internal/v1/edge/challenges/{kind}/{key}", tag = "edge",
    params(("kind" = String, Path, description = "`http-01` or `tls-alpn-01`"),
        ("key" = String, Path, description = "the token, or the hostname")),
    responses((status = 200, description = "a portico-protocol ChallengeAnswer"),
        (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("edge_token" = [])))]
pub async fn challenge(
    State(state): State<AppState>,
    _edge: EdgeAuth,
    Path((kind, key)): Path<(String, String)>,
) -> Result<Json<portico_protocol::ChallengeAnswer>, ApiError> {
    const NONE: ApiError = ApiError::NotFound("challenge answer");
    if key.is_empty() || key.len() > 256 {
        return Err(NONE);
    }
    let id = match kind.as_str() {
        "http-01" => format!("http01:{key}"),
        "tls-alpn-01" => format!(
            "tls_alpn01:{}",
            key.trim_end_matches('.').to_ascii_lowercase()
        ),
        _ => return Err(NONE),
    };
    let mut conn = state.pool.acquire().await?;
    let row = db::published::challenges_named(&mut conn, &[id])
        .await?
        .into_iter()
        .next();
    row.and_then(|row| frames::challenge(row, &state.settings.encryption_keys))
        .map(Json)
        .ok_or(NONE)
}

async fn servable_on_demand(state: &AppState, hostname: &str) -> Result<bool, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let host = db::published::hosts_named(&mut conn, &[hostname.to_string()]).await?;
    Ok(host.first().is_some_and(|h| h.on_demand))
}

async fn stored_bundle(
    state: &AppState,
    hostname: &str,
) -> Result<Option<portico_protocol::CertificateBundle>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let stored = db::published::certificates_named(&mut conn, &[hostname.to_string()]).await?;
    Ok(stored
        .into_iter()
        .find(|row| row.not_after > Utc::now())
        .and_then(|row| frames::bundle(row, &state.settings.encryption_keys)))
}

async fn wait_for_certificate(
    state: &AppState,
    domain: uuid::Uuid,
    hostname: &str,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + state.settings.certificates.on_demand_wait;
    loop {
        // The order row says when to look: the bundle is read (and its key
        // opened) once, when the order is done.
        match db::orders::get(&state.pool, domain).await? {
            Some(order) if order.status == "done" => {
                return match stored_bundle(state, hostname).await? {
                    Some(bundle) => Ok(Json(bundle).into_response()),
                    None => Err(ApiError::Unavailable(format!(
                        "the certificate for {hostname:?} was issued but cannot be read; see the control plane's log"
                    ))),
                };
            }
            Some(order) if order.status == "failed" => {
                return Err(ApiError::Unavailable(format!(
                    "issuing a certificate for {hostname:?} failed: {}",
                    order.last_error.unwrap_or_default()
                )));
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Unavailable(format!(
                "the certificate for {hostname:?} is still being issued; it reaches the edges when done"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
