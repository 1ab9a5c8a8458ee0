//! Cross-cutting request layers for `/v1`: the per-key rate limit and
//! `Idempotency-Key` handling. Both run before the handler's own extractors.

use super::AppState;
use super::error::ApiError;
use crate::db::idempotency::{self, Reservation, StoredResponse};
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::num::NonZeroU32;
use std::sync::Arc;

pub type KeyedLimiter =
    RateLimiter<String, governor::state::keyed::DefaultKeyedStateStore<String>, DefaultClock>;

pub fn limiter(per_second: u32, burst: u32) -> Arc<KeyedLimiter> {
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Arc::new(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// The rate-limit bucket of a request: its credential's public part, so every
/// key (and the operator token) has its own budget.
fn bucket(req: &Request) -> String {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match auth
        .strip_prefix("Bearer ptk_")
        .and_then(|r| r.split('_').next())
    {
        Some(prefix) => format!("key:{prefix}"),
        None => format!(
            "other:{}",
            hex::encode(&Sha256::digest(auth.as_bytes())[..8])
        ),
    }
}

pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match state.limiter.check_key(&bucket(&req)) {
        Ok(()) => next.run(req).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            }
            .into_response()
        }
    }
}

const MAX_STORED_RESPONSE: usize = 8 * 1024 * 1024;

/// Same key + same request → the stored response; same key + different
/// request → 422; a key whose first request is still running → 409. Only
/// responses a retry could not change are stored: 5xx, 401 and 429 release
/// the key so the client may try again.
pub async fn idempotency(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if req.method() != Method::POST {
        return Ok(next.run(req).await);
    }
    let Some(key) = req.headers().get("idempotency-key") else {
        return Ok(next.run(req).await);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
        })?
        .to_string();
    let scope = Sha256::digest(
        req.headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or(b""),
    )
    .to_vec();
    let (parts, body) = req.into_parts();
    let limit = super::body_limit_for(parts.uri.path());
    let bytes = to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })?;
    let mut hasher = Sha256::new();
    hasher.update(parts.uri.path().as_bytes());
    hasher.update([0]);
    hasher.update(parts.uri.query().unwrap_or("").as_bytes());
    hasher.update([0]);
    hasher.update(&bytes);
    let request_hash = hasher.finalize().to_vec();

    match idempotency::reserve(&state.pool, &scope, &key, &request_hash).await? {
        Reservation::Existing {
            request_hash: stored,
            ..
        } if stored != request_hash => Err(ApiError::IdempotencyKeyReused),
        Reservation::Existing { response: None, .. } => Err(ApiError::IdempotencyInProgress),
        Reservation::Existing {
            response: Some(r), ..
        } => Ok(replay(r)),
        Reservation::Reserved => {
            let resp = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            store(&state, &scope, &key, resp).await
        }
    }
}

async fn store(
    state: &AppState,
    scope: &[u8],
    key: &str,
    resp: Response,
) -> Result<Response, ApiError> {
    let status = resp.status();
    let retryable = status.is_server_error() || status.as_u16() == 401 || status.as_u16() == 429;
    if retryable {
        idempotency::release(&state.pool, scope, key).await?;
        return Ok(resp);
    }
    let (parts, body) = resp.into_parts();
    let bytes = match to_bytes(body, MAX_STORED_RESPONSE).await {
        Ok(b) => b,
        Err(e) => {
            idempotency::release(&state.pool, scope, key).await?;
            return Err(ApiError::Internal(anyhow::anyhow!(
                "response too large to store: {e}"
            )));
        }
    };
    let stored = StoredResponse {
        status_code: status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: bytes.to_vec(),
    };
    idempotency::complete(&state.pool, scope, key, &stored).await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

fn replay(r: StoredResponse) -> Response {
    let mut resp = Response::new(Body::from(r.body));
    *resp.status_mut() =
        axum::http::StatusCode::from_u16(r.status_code).unwrap_or(axum::http::StatusCode::OK);
    if let Some(ct) = r.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    resp
}
