//! Request extractors that turn raw input into typed values or a clear
//! problem: JSON bodies (content type, syntax, unknown fields, the path of the
//! bad field) and the two kinds of credentials.

use super::AppState;
use super::error::{ApiError, FieldError};
use crate::api_key::PresentedKey;
use crate::db;
use crate::db::tenants::Tenant;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A JSON body, deserialised with errors that name the field.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "expected Content-Type: application/json, got {:?}",
                content_type.chars().take(80).collect::<String>()
            )));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(_) => ApiError::PayloadTooLarge {
                limit: super::BODY_LIMIT,
            },
            other => ApiError::BadRequest(other.body_text()),
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = inner.to_string();
                let code = if message.starts_with("unknown field") {
                    "unknown_field"
                } else if message.starts_with("missing field") {
                    "missing_field"
                } else {
                    "invalid_type"
                };
                let field = match (path.as_str(), code) {
                    (".", "missing_field") | ("", "missing_field") => message
                        .split('`')
                        .nth(1)
                        .map(str::to_string)
                        .unwrap_or_else(|| ".".into()),
                    _ => path,
                };
                ApiError::from_fields(vec![FieldError {
                    field,
                    code: code.into(),
                    message: strip_position(&message),
                }])
            }
            _ => ApiError::MalformedJson(format!("the body is not valid JSON: {inner}")),
        }
    })
}

/// serde_json appends " at line 1 column 42" to data errors; the path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

pub fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// A caller authenticated by a tenant API key.
pub struct TenantAuth {
    pub tenant: Tenant,
}

impl FromRequestParts<AppState> for TenantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized(
            "missing credentials: send `Authorization: Bearer <api key>`",
        ))?;
        let presented = PresentedKey::parse(token)
            .map_err(|_| ApiError::Unauthorized("the API key is malformed"))?;
        let invalid = ApiError::Unauthorized("the API key is invalid or revoked");
        let found = db::api_keys::find_for_auth(&state.pool, &presented.prefix)
            .await?
            .ok_or(invalid)?;
        if !presented.matches(&found.hash) {
            return Err(ApiError::Unauthorized("the API key is invalid or revoked"));
        }
        if found.tenant.status != "active" {
            return Err(ApiError::Unauthorized("this account is suspended"));
        }
        db::api_keys::touch(&state.pool, found.key_id).await?;
        // Every log line of this request now carries the tenant.
        tracing::Span::current().record("tenant", tracing::field::display(found.tenant.id));
        Ok(TenantAuth {
            tenant: found.tenant,
        })
    }
}

/// A caller authenticated by the operator token.
pub struct OperatorAuth;

impl FromRequestParts<AppState> for OperatorAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let expected = state
            .settings
            .operator_token
            .as_ref()
            .ok_or(ApiError::Unauthorized(
                "operator endpoints are disabled: PORTICO_OPERATOR_TOKEN is not set",
            ))?;
        let token = bearer(parts).ok_or(ApiError::Unauthorized(
            "missing credentials: send `Authorization: Bearer <operator token>`",
        ))?;
        if operator_token_matches(expected, token) {
            Ok(OperatorAuth)
        } else {
            Err(ApiError::Unauthorized("the operator token is invalid"))
        }
    }
}

/// Whether `presented` is the operator token (constant time; the JSON API's
/// bearer check and the dashboard's login form share it).
pub fn operator_token_matches(expected: &crate::secret::Secret<String>, presented: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.expose().as_bytes());
    bool::from(a.ct_eq(&b))
}
