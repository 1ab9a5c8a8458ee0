//! Dashboard login: the operator token, typed once into a form, buys a
//! session cookie (`HttpOnly`, `SameSite=Strict`, `Path=/ops`, `Secure` behind
//! https). The cookie holds 32 random bytes; the database keeps their SHA-256,
//! the expiry and the session's CSRF token, so every replica honours it.
//!
//! Every state-changing POST passes [`check_post`]: the browser must say the
//! request comes from this origin (`Sec-Fetch-Site: same-origin`, else an
//! `Origin` naming this host or `PORTICO_PUBLIC_URL`) AND the form must echo
//! the session's CSRF token.

use super::OpsState;
use super::error::OpsError;
use super::view;
use crate::db;
use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "portico_ops";

/// A logged-in operator: the request carried a live session cookie.
pub struct Session {
    id_hash: [u8; 32],
    pub csrf: String,
}

impl FromRequestParts<OpsState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &OpsState) -> Result<Self, Response> {
        if state.app.settings.operator_token.is_none() {
            return Err(OpsError::Disabled.into_response());
        }
        let Some(id) = cookie(&parts.headers, COOKIE).and_then(|v| hex::decode(v).ok()) else {
            return Err(to_login());
        };
        let id_hash: [u8; 32] = Sha256::digest(&id).into();
        match db::ops_sessions::find(&state.app.pool, &id_hash).await {
            Ok(Some(s)) => Ok(Session {
                id_hash,
                csrf: s.csrf_token,
            }),
            Ok(None) => Err(to_login()),
            Err(e) => Err(OpsError::from(e).into_response()),
        }
    }
}

fn to_login() -> Response {
    Redirect::to("/ops/login").into_response()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Rejects a POST that a browser did not send from this dashboard's own
/// pages, or whose form lacks this session's CSRF token.
pub fn check_post(
    state: &OpsState,
    headers: &HeaderMap,
    session: Option<&Session>,
    form_csrf: &str,
) -> Result<(), OpsError> {
    check_origin(headers, &state.app.settings.alerts.public_url)?;
    if let Some(session) = session {
        let ok = !form_csrf.is_empty()
            && bool::from(form_csrf.as_bytes().ct_eq(session.csrf.as_bytes()));
        if !ok {
            return Err(OpsError::Forbidden(
                "the form's CSRF token is missing or stale: reload the page and try again",
            ));
        }
    }
    Ok(())
}

/// Same-origin proof from the browser: `Sec-Fetch-Site` when sent, else `Origin`.
pub fn check_origin(headers: &HeaderMap, public_url: &str) -> Result<(), OpsError> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return match site {
            "same-origin" => Ok(()),
            _ => Err(OpsError::Forbidden("cross-site form posts are refused")),
        };
    }
    let Some(origin) = get("origin") else {
        return Err(OpsError::Forbidden(
            "the request carries neither Sec-Fetch-Site nor Origin; the dashboard needs a browser that sends them",
        ));
    };
    let host = get("host").unwrap_or("");
    let ours = ["http://", "https://"]
        .iter()
        .any(|scheme| !host.is_empty() && origin == format!("{scheme}{host}"));
    if ours || origin == public_origin(public_url) {
        Ok(())
    } else {
        Err(OpsError::Forbidden("cross-origin form posts are refused"))
    }
}

/// `scheme://host[:port]` of a URL (no path).
fn public_origin(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

pub async fn login_form(State(state): State<OpsState>) -> Response {
    if state.app.settings.operator_token.is_none() {
        return OpsError::Disabled.into_response();
    }
    view::login(None).into_response()
}

pub async fn login(
    State(state): State<OpsState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, OpsError> {
    let Some(expected) = state.app.settings.operator_token.as_ref() else {
        return Err(OpsError::Disabled);
    };
    check_post(&state, &headers, None, "")?;
    if state.login_limiter.check().is_err() {
        let page = view::login(Some(
            "Too many login attempts; wait a minute and try again.",
        ));
        return Ok((StatusCode::TOO_MANY_REQUESTS, page).into_response());
    }
    if !crate::api::extract::operator_token_matches(expected, form.token.trim()) {
        tracing::warn!("ops dashboard: login with a wrong operator token");
        let page = view::login(Some("That is not the operator token."));
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    }
    let id: [u8; 32] = rand::random();
    let csrf = hex::encode(rand::random::<[u8; 32]>());
    let ttl = state.app.settings.ops.session_ttl;
    let id_hash: [u8; 32] = Sha256::digest(id).into();
    db::ops_sessions::create(&state.app.pool, &id_hash, &csrf, ttl.as_secs_f64()).await?;
    let secure = if state.app.settings.alerts.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={}; Path=/ops; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        hex::encode(id),
        ttl.as_secs()
    );
    Ok(with_cookie(Redirect::to("/ops").into_response(), &cookie))
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub async fn logout(
    State(state): State<OpsState>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Result<Response, OpsError> {
    check_post(&state, &headers, Some(&session), &form.csrf)?;
    db::ops_sessions::delete(&state.app.pool, &session.id_hash).await?;
    let cookie = format!("{COOKIE}=; Path=/ops; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(with_cookie(
        Redirect::to("/ops/login").into_response(),
        &cookie,
    ))
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origin_checks() {
        let public = "https://ops.example.com";
        let ok = |h: &[(&'static str, &'static str)]| check_origin(&headers(h), public).is_ok();
        assert!(ok(&[("sec-fetch-site", "same-origin")]));
        assert!(!ok(&[("sec-fetch-site", "cross-site")]));
        assert!(!ok(&[("sec-fetch-site", "same-site")]));
        assert!(ok(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ]));
        assert!(ok(&[
            ("origin", "https://ops.example.com"),
            ("host", "10.0.0.1:8080")
        ]));
        assert!(!ok(&[
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:8080")
        ]));
        assert!(!ok(&[("origin", "null"), ("host", "127.0.0.1:8080")]));
        assert!(!ok(&[("host", "127.0.0.1:8080")]));
    }

    #[test]
    fn cookie_lookup() {
        let h = headers(&[("cookie", "a=1; portico_ops=abc ; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
