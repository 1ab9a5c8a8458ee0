//! The pingora `ProxyHttp` implementation. The hooks stay thin: routing
//! decisions live in [`crate::routing`], target choice in
//! [`crate::upstream`], pages in [`crate::pages`].

use crate::challenge_fetch::ChallengeFetch;
use crate::routing::{self, Decision, RequestFacts};
use crate::state::Edge;
use crate::table::Route;
use crate::tls::Sni;
use crate::traffic::{self, Event, EventKind};
use crate::upstream::{self, Upstreams};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct EdgeProxy {
    pub edge: Arc<Edge>,
    /// Challenge answers the table lacks, from the control plane.
    pub challenges: Arc<ChallengeFetch>,
    pub upstreams: Upstreams,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

#[derive(Default)]
pub struct Ctx {
    route: Option<Arc<Route>>,
    /// `exact`, `wildcard` or `unknown`, for metrics.
    host_class: &'static str,
    /// The host as the client asked for it (Host or :authority, no port).
    incoming_host: String,
    tls: bool,
    tried: Vec<usize>,
    current: Option<usize>,
    /// Request body bytes seen so far (bodies without Content-Length are
    /// counted as they stream).
    body_bytes: u64,
    body_limit: u64,
    /// When the request header arrived (for the traffic windows' latency).
    started: Option<Instant>,
    /// Upstream connect attempts that failed for this request.
    connect_failures: u32,
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            host_class: "unknown",
            started: Some(Instant::now()),
            ..Ctx::default()
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let table = self.edge.table();
        let req = session.req_header();
        let host = request_host(req);
        let ssl = session
            .as_downstream()
            .digest()
            .and_then(|d| d.ssl_digest.clone());
        ctx.tls = ssl.is_some();
        let sni = ssl
            .as_ref()
            .and_then(|s| s.extension.get::<Sni>())
            .map(|s| s.0.clone());
        let path = req
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let content_length = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let facts = RequestFacts {
            host: &host,
            path_and_query: &path,
            tls: ctx.tls,
            sni: sni.as_deref(),
            content_length,
        };
        let decision = routing::decide(&table, &facts);
        ctx.incoming_host = host;
        ctx.body_limit = table.settings().max_request_body_bytes;
        match decision {
            Decision::Proxy { route, wildcard } => {
                ctx.host_class = if wildcard { "wildcard" } else { "exact" };
                ctx.route = Some(route);
                Ok(false)
            }
            Decision::Redirect(location) => {
                let mut resp = ResponseHeader::build(308, Some(2))?;
                resp.insert_header(http::header::LOCATION, location)?;
                resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
                session.write_response_header(Box::new(resp), true).await?;
                Ok(true)
            }
            Decision::Respond {
                status,
                content_type,
                body,
            } => {
                respond(session, status, content_type, body).await?;
                Ok(true)
            }
            Decision::FetchChallenge(token) => {
                match self.challenges.http01(&self.edge, &token).await {
                    Some(key_auth) => {
                        respond(session, 200, "text/plain", key_auth.to_string()).await?;
                    }
                    None => {
                        respond(
                            session,
                            404,
                            "text/plain",
                            "unknown challenge token\n".into(),
                        )
                        .await?;
                    }
                }
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.body_bytes > ctx.body_limit {
            return Error::e_explain(HTTPStatus(413), "request body over the limit");
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .clone()
            .ok_or_else(|| Error::explain(InternalError, "no route"))?;
        let index = self
            .upstreams
            .pick(&route, &ctx.tried)
            .ok_or_else(|| Error::explain(ConnectNoRoute, "all targets tried"))?;
        ctx.tried.push(index);
        ctx.current = Some(index);
        let target = &route.targets[index];
        let addr = upstream::resolve(target).await.map_err(|e| {
            self.upstreams.mark_down(target);
            Error::because(ConnectNoRoute, format!("resolving {target}"), e)
        })?;
        let sni = route
            .config
            .target_sni
            .clone()
            .unwrap_or_else(|| target.host.clone());
        let mut peer = HttpPeer::new(addr, route.config.target_tls, sni);
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.read_timeout);
        peer.options.verify_cert = route.config.verify_target_tls;
        peer.options.verify_hostname = route.config.verify_target_tls;
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.edge.metrics.upstream_connect_failures.inc();
        ctx.connect_failures = ctx.connect_failures.saturating_add(1);
        if let (Some(route), Some(i)) = (&ctx.route, ctx.current) {
            self.upstreams.mark_down(&route.targets[i]);
            let more = ctx.tried.len() < route.targets.len();
            if more && session.req_header().method.is_idempotent() {
                e.set_retry(true);
            }
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(route), Some(i)) = (&ctx.route, ctx.current) {
            self.upstreams.mark_up(&route.targets[i]);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let forwarded_for = match upstream
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.is_empty() => format!("{prev}, {client_ip}"),
            _ => client_ip,
        };
        upstream.insert_header("x-forwarded-for", forwarded_for)?;
        upstream.insert_header("x-forwarded-proto", if ctx.tls { "https" } else { "http" })?;
        upstream.insert_header("x-forwarded-host", ctx.incoming_host.clone())?;
        upstream.insert_header("portico-incoming-host", ctx.incoming_host.clone())?;
        if let (Some(route), Some(i)) = (&ctx.route, ctx.current)
            && !route.config.keep_host
        {
            let target = &route.targets[i];
            let default_port = if route.config.target_tls { 443 } else { 80 };
            let host = if target.port == default_port {
                target.host.clone()
            } else {
                target.to_string()
            };
            upstream.insert_header(http::header::HOST, host)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            HTTPStatus(code) => *code,
            ConnectTimedout | ReadTimedout | WriteTimedout => 504,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => 0,
                ErrorSource::Internal | ErrorSource::Unset => 502,
            },
        };
        if code > 0 {
            let _ = respond(
                session,
                code,
                "text/html; charset=utf-8",
                crate::pages::html(code),
            )
            .await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "none",
        };
        self.edge
            .metrics
            .requests
            .with_label_values(&[ctx.host_class, class])
            .inc();
        self.record_traffic(status, ctx);
    }
}

impl EdgeProxy {
    /// Counts the request in its configured host's traffic window (hosts
    /// the table does not know are not counted there).
    fn record_traffic(&self, status: u16, ctx: &Ctx) {
        let route = match &ctx.route {
            Some(route) => route.clone(),
            None => match self.edge.table().route(&ctx.incoming_host).route() {
                Some(route) => route.clone(),
                None => return,
            },
        };
        let latency = ctx.started.map_or(Duration::ZERO, |t| t.elapsed());
        let event = Event {
            route,
            at_unix: traffic::unix_now(),
            kind: EventKind::Request {
                status,
                latency_ms: u32::try_from(latency.as_millis()).unwrap_or(u32::MAX),
                connect_failures: ctx.connect_failures,
            },
        };
        self.edge.traffic.record(event, &self.edge.metrics);
    }
}

/// The host the client asked for: `Host`, else the URI authority (HTTP/2),
/// lower-cased, without a port.
fn request_host(req: &RequestHeader) -> String {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let without_port = match raw.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: String,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}
