//! The admin listener: `/healthz` (the process is up; the body names the
//! version and commit it was built from), `/readyz` (a snapshot
//! is loaded, so the edge routes real traffic) and `/metrics` (Prometheus).
//!
//! With `PORTICO_EDGE_TEST_HOOKS=1` (end-to-end tests only, never in
//! production) it also takes `POST /test/forget-certificate?host=NAME`,
//! which drops that certificate from the table as if it had been lost, so
//! that tests can watch the control plane notice and re-push it.

use crate::build_info;
use crate::state::Edge;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

pub struct Admin {
    pub edge: Arc<Edge>,
    /// Serve `/test/...` (see the module comment).
    pub test_hooks: bool,
}

impl Admin {
    fn test_hook(&self, session: &ServerSession) -> (u16, &'static str, Vec<u8>) {
        let req = session.req_header();
        let host = req
            .uri
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("host=")))
            .filter(|h| !h.is_empty() && h.len() <= 253);
        match (req.method.as_str(), req.uri.path(), host) {
            ("POST", "/test/forget-certificate", Some(host)) => {
                match self.edge.forget_certificates(&[host.to_owned()]) {
                    Ok(()) => (200, "text/plain", format!("forgot {host}\n").into_bytes()),
                    Err(e) => (400, "text/plain", format!("{e}\n").into_bytes()),
                }
            }
            _ => (404, "text/plain", b"not found\n".to_vec()),
        }
    }
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
            path if self.test_hooks && path.starts_with("/test/") => self.test_hook(session),
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
