//! What to do with a request before any upstream is involved, as a pure
//! function of the table and the request's facts: answer an ACME HTTP-01
//! token, refuse a Host that does not match the TLS SNI (421), serve the
//! "not configured" page, redirect, refuse an oversized body, or proxy.

use crate::table::{Lookup, Route, RoutingTable};
use portico_protocol::Redirect;
use std::sync::Arc;

const ACME_PREFIX: &str = "/.well-known/acme-challenge/";

/// The facts of a request that routing depends on.
pub struct RequestFacts<'a> {
    /// The Host header (or `:authority`), lower-cased, without port.
    pub host: &'a str,
    pub path_and_query: &'a str,
    pub tls: bool,
    /// The TLS SNI of the connection, if TLS and sent.
    pub sni: Option<&'a str>,
    pub content_length: Option<u64>,
}

#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Answer with this status, content type and body.
    Respond {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// Redirect permanently to this URL (308 keeps the method).
    Redirect(String),
    /// Proxy to the route's targets. `wildcard` tells how the host matched.
    Proxy { route: Arc<Route>, wildcard: bool },
}

pub fn decide(table: &RoutingTable, req: &RequestFacts<'_>) -> Decision {
    if let Some(token) = req.path_and_query.strip_prefix(ACME_PREFIX)
        && !req.tls
    {
        return match table.http01(token) {
            Some(key_auth) => respond(200, "text/plain", key_auth.to_string()),
            None => respond(404, "text/plain", "unknown challenge token\n".into()),
        };
    }
    if let Some(sni) = req.sni
        && sni != req.host
    {
        return page(421);
    }
    let (route, wildcard) = match table.route(req.host) {
        Lookup::Exact(r) => (r.clone(), false),
        Lookup::Wildcard(r) => (r.clone(), true),
        Lookup::Default => return page(404),
    };
    if let Some(url) = redirect(&route, req) {
        return Decision::Redirect(url);
    }
    let limit = table.settings().max_request_body_bytes;
    if req.content_length.is_some_and(|n| n > limit) {
        return page(413);
    }
    if route.targets.is_empty() {
        return page(502);
    }
    Decision::Proxy { route, wildcard }
}

fn redirect(route: &Route, req: &RequestFacts<'_>) -> Option<String> {
    let mut scheme = if req.tls { "https" } else { "http" };
    let mut host = req.host.to_string();
    let mut changed = false;
    for rule in &route.config.redirects {
        match rule {
            Redirect::ToHttps if !req.tls => {
                scheme = "https";
                changed = true;
            }
            Redirect::WwwToApex => {
                if let Some(apex) = host.strip_prefix("www.") {
                    host = apex.to_string();
                    changed = true;
                }
            }
            Redirect::ApexToWww if !host.starts_with("www.") => {
                host = format!("www.{host}");
                changed = true;
            }
            _ => {}
        }
    }
    changed.then(|| format!("{scheme}://{host}{}", req.path_and_query))
}

fn respond(status: u16, content_type: &'static str, body: String) -> Decision {
    Decision::Respond {
        status,
        content_type,
        body,
    }
}

fn page(status: u16) -> Decision {
    respond(
        status,
        "text/html; charset=utf-8",
        crate::pages::html(status),
    )
}
