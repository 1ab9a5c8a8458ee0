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
        } => replay(&state, &scope, &key, r),
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
    let body = if parts.extensions.get::<SecretBearing>().is_some() {
        match seal_stored(state, scope, key, &bytes) {
            Some(sealed) => sealed,
            None => {
                // Never store a secret in the clear: this key simply won't replay.
                idempotency::release(&state.pool, scope, key).await?;
                return Ok(Response::from_parts(parts, Body::from(bytes)));
            }
        }
    } else {
        bytes.to_vec()
    };
    let stored = StoredResponse {
        status_code: status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
    };
    idempotency::complete(&state.pool, scope, key, &stored).await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// Marks a response that shows a secret (a webhook signing secret): the
/// copy kept for `Idempotency-Key` replays is sealed with the configured
/// keys, like every other secret at rest.
#[derive(Clone, Copy, Debug)]
pub struct SecretBearing;

/// Prefix of a sealed stored body: magic, key-id length, key id, sealed bytes.
const SEALED_MAGIC: &[u8] = b"portico-sealed-v1:";

fn seal_context(scope: &[u8], key: &str) -> Vec<u8> {
    let mut c = b"idempotency:".to_vec();
    c.extend_from_slice(scope);
    c.extend_from_slice(key.as_bytes());
    c
}

fn seal_stored(state: &AppState, scope: &[u8], key: &str, body: &[u8]) -> Option<Vec<u8>> {
    let sealed = state
        .settings
        .encryption_keys
        .seal(body, &seal_context(scope, key))
        .ok()?;
    let mut out = SEALED_MAGIC.to_vec();
    out.push(u8::try_from(sealed.key_id.len()).ok()?);
    out.extend_from_slice(sealed.key_id.as_bytes());
    out.extend_from_slice(&sealed.bytes);
    Some(out)
}

fn open_stored(
    state: &AppState,
    scope: &[u8],
    key: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, ApiError> {
    let Some(rest) = body.strip_prefix(SEALED_MAGIC) else {
        return Ok(body);
    };
    let fail = || {
        ApiError::Internal(anyhow::anyhow!(
            "a stored idempotent response does not open"
        ))
    };
    let (&len, rest) = rest.split_first().ok_or_else(fail)?;
    let (key_id, sealed) = rest.split_at_checked(usize::from(len)).ok_or_else(fail)?;
    let key_id = std::str::from_utf8(key_id).map_err(|_| fail())?;
    state
        .settings
        .encryption_keys
        .open(key_id, sealed, &seal_context(scope, key))
        .map(|plain| plain.expose().clone())
        .map_err(|_| fail())
}

fn replay(
    state: &AppState,
    scope: &[u8],
    key: &str,
    r: StoredResponse,
) -> Result<Response, ApiError> {
    let body = open_stored(state, scope, key, r.body)?;
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() =
        axum::http::StatusCode::from_u16(r.status_code).unwrap_or(axum::http::StatusCode::OK);
    if let Some(ct) = r.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(resp)
}
