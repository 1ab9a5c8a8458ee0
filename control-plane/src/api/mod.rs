//! The HTTP API. Routes are registered through `utoipa_axum`, so the OpenAPI
//! document (`GET /v1/openapi.json`) is generated from the same list the
//! router serves: a route cannot exist without its documentation.
//!
//! Layers, outermost first: request id + tracing span, body size limit, then
//! for `/v1/*` the per-key rate limit and `Idempotency-Key` handling.

pub mod alerts;
pub mod certificates;
pub mod domain_input;
pub mod domains;
pub mod edge_reports;
pub mod edges;
pub mod error;
pub mod events;
pub mod extract;
pub mod middleware;
pub mod pagination;
pub mod repairs;
pub mod tenants;
pub mod webhook_input;
pub mod webhook_messages;
pub mod webhook_schemas;
pub mod webhooks;

use crate::dns::DnsChecker;
use crate::settings::Settings;
use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use error::ApiError;
use sqlx::PgPool;
use std::sync::Arc;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Request bodies above this size get 413 (batch creation allows more, see [`BATCH_BODY_LIMIT`]).
pub const BODY_LIMIT: usize = 64 * 1024;
/// 1,000 domains with options do not fit in 64 KiB.
pub const BATCH_BODY_LIMIT: usize = 2 * 1024 * 1024;

pub fn body_limit_for(path: &str) -> usize {
    if path.ends_with(":batch") {
        BATCH_BODY_LIMIT
    } else if path == edge_reports::PATH {
        edge_reports::BODY_LIMIT
    } else {
        BODY_LIMIT
    }
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub dns: DnsChecker,
    pub limiter: Arc<middleware::KeyedLimiter>,
    pub publisher: crate::publish::Publisher,
    pub webhooks: crate::webhooks::Webhooks,
    pub alerts: crate::alerts::Alerts,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Portico API", version = "1", description = "Custom domains with automatic TLS. Errors are application/problem+json."),
    modifiers(&SecuritySchemes),
    components(schemas(error::Problem, error::FieldError,
        webhook_schemas::WebhookPayload, webhook_schemas::DomainEventPayload,
        webhook_schemas::CertificateEventPayload, webhook_schemas::CertificateIssuedData,
        webhook_schemas::CertificateFailedData, webhook_schemas::EndpointDisabledEventPayload,
        webhook_schemas::WebhookTestEventPayload, webhook_schemas::WebhookTestData,
        webhook_schemas::HealthEventPayload))
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "operator_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "edge_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The whole router, and the OpenAPI document describing it.
pub fn router(state: AppState) -> axum::Router {
    let v1 = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(domains::create, domains::list))
        .routes(routes!(domains::create_batch))
        .routes(routes!(domains::get, domains::update, domains::delete))
        .routes(routes!(domains::verify))
        .routes(routes!(domains::dns))
        .routes(routes!(certificates::get))
        .routes(routes!(certificates::renew))
        .routes(routes!(certificates::ops))
        .routes(routes!(tenants::create))
        .routes(routes!(tenants::get, tenants::update))
        .routes(routes!(tenants::create_key, tenants::list_keys))
        .routes(routes!(tenants::revoke_key))
        .routes(routes!(events::list))
        .routes(routes!(edges::create, edges::list))
        .routes(routes!(alerts::list))
        .routes(routes!(repairs::list))
        .routes(routes!(repairs::get))
        .routes(routes!(repairs::pause))
        .routes(routes!(repairs::resume))
        .routes(routes!(repairs::retry))
        .routes(routes!(repairs::close))
        .routes(routes!(repairs::for_domain))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::get, webhooks::update, webhooks::delete))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhook_messages::list))
        .routes(routes!(webhook_messages::attempts))
        .routes(routes!(webhook_messages::retry))
        .routes(routes!(webhook_messages::replay))
        .routes(routes!(webhook_messages::test))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::idempotency,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::rate_limit,
        ));
    let (v1, doc) = OpenApiRouter::new()
        .merge(v1)
        .routes(routes!(edges::config))
        .routes(routes!(edges::heartbeat))
        .routes(routes!(edge_reports::report))
        .routes(routes!(edges::request_certificate))
        .routes(routes!(edges::challenge))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_json))
        .split_for_parts();
    let doc = Arc::new(doc);
    // The ops dashboard: HTML, so not in the OpenAPI document.
    v1.merge(crate::ops::router(state.clone()))
        .layer(axum::Extension(doc))
        .fallback(|| async { ApiError::NotFound("route") })
        .layer(DefaultBodyLimit::max(
            BATCH_BODY_LIMIT.max(edge_reports::BODY_LIMIT),
        ))
        .layer(axum::middleware::from_fn(limit_body))
        .layer(axum::middleware::from_fn(crate::telemetry::request_id))
        .with_state(state)
}

/// Enforces [`BODY_LIMIT`] (or the batch limit) from `Content-Length` up
/// front; bodies without a length are cut off while being read.
async fn limit_body(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let limit = body_limit_for(req.uri().path());
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return ApiError::PayloadTooLarge { limit }.into_response();
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::Body::new(http_body_util::Limited::new(body, limit));
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// Liveness: the process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "alive")))]
async fn healthz() -> Json<serde_json::Value> {
    use crate::build_info::{COMMIT, VERSION};
    Json(serde_json::json!({"status": "ok", "version": VERSION, "commit": COMMIT}))
}

/// Readiness: the database answers and all migrations are applied.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200), (status = 503)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match crate::db::readiness(&state.pool).await {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({"status": "ready"}))),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "not_ready", "reason": reason})),
            )
        }
    }
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document")))]
async fn openapi_json(
    axum::Extension(doc): axum::Extension<Arc<utoipa::openapi::OpenApi>>,
) -> impl IntoResponse {
    Json(doc.as_ref().clone())
}
