//! The live ops dashboard (`/ops`): server-rendered HTML for operators,
//! behind a login with the operator token (see [`session`]). Pages read
//! through `db::dashboard`; sections update in place when the database
//! notifies a change ([`live`]); run actions go through the same functions
//! as the JSON API ([`actions`]). Not part of the OpenAPI document: it is
//! HTML, not API. See `docs/dashboard.md`.

pub mod actions;
pub mod chart;
pub mod error;
pub mod live;
pub mod pages;
pub mod sections;
pub mod session;
pub mod view;

use crate::api::AppState;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;

#[derive(Clone)]
pub struct OpsState {
    pub app: AppState,
    pub hub: live::Hub,
    /// Login attempts, all clients of this process together.
    pub login_limiter: Arc<DefaultDirectRateLimiter>,
}

/// The dashboard's routes, ready to merge into the API router.
pub fn router(app: AppState) -> Router<AppState> {
    let ops = &app.settings.ops;
    let per_minute = NonZeroU32::new(ops.login_per_minute).unwrap_or(NonZeroU32::MIN);
    let state = OpsState {
        hub: live::Hub::new(
            app.pool.clone(),
            app.publisher.latest.clone(),
            ops.max_event_clients as usize,
        ),
        login_limiter: Arc::new(RateLimiter::direct(Quota::per_minute(per_minute))),
        app,
    };
    Router::new()
        .route("/ops", get(pages::overview))
        .route("/ops/login", get(session::login_form).post(session::login))
        .route("/ops/logout", post(session::logout))
        .route("/ops/live.js", get(script))
        .route("/ops/events", get(live::events))
        .route("/ops/fragments/{name}", get(pages::fragment))
        .route("/ops/domains", get(pages::lookup))
        .route("/ops/domains/{id}", get(pages::domain))
        .route("/ops/edges/{id}", get(pages::edge))
        .route("/ops/alerts/{id}", get(pages::alert))
        .route("/ops/repairs", get(pages::repairs))
        .route("/ops/repairs/{id}/{action}", post(actions::run_action))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        view::SCRIPT,
    )
        .into_response()
}

/// No framing, no foreign scripts or connections, no caching of operator pages.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; \
             img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in set {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}
