//! The admin listener: `/healthz` (the process is up; the body names the
//! version and commit it was built from), `/readyz` (a snapshot
//! is loaded, so the edge routes real traffic) and `/metrics` (Prometheus).

use crate::build_info;
use crate::state::Edge;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

pub struct Admin {
    pub edge: Arc<Edge>,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, content_type, body) = match session.req_header().uri.path() {
            "/healthz" => (
                200,
                "text/plain",
                format!("ok {} {}\n", build_info::VERSION, build_info::COMMIT).into_bytes(),
            ),
            "/readyz" if self.edge.is_ready() => (
                200,
                "text/plain",
                format!("ready {}\n", self.edge.table().version()).into_bytes(),
            ),
            "/readyz" => (503, "text/plain", b"no snapshot loaded\n".to_vec()),
            "/metrics" => (200, "text/plain; version=0.0.4", self.edge.metrics.render()),
            _ => (404, "text/plain", b"not found\n".to_vec()),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        if let Ok(v) = http::HeaderValue::from_str(content_type) {
            resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        let len = resp.body().len();
        resp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
        resp
    }
}
