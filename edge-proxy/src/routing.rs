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
    /// A well-formed HTTP-01 token the table lacks: ask the control plane
    /// (the config stream may lag), 404 if it has none either.
    FetchChallenge(String),
}

pub fn decide(table: &RoutingTable, req: &RequestFacts<'_>) -> Decision {
    if let Some(token) = req.path_and_query.strip_prefix(ACME_PREFIX)
        && !req.tls
    {
        return match table.http01(token) {
            Some(key_auth) => respond(200, "text/plain", key_auth.to_string()),
            None if crate::table::valid_token(token) => Decision::FetchChallenge(token.to_owned()),
            None => unknown_challenge(),
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

/// The answer to a token nobody knows.
fn unknown_challenge() -> Decision {
    respond(404, "text/plain", "unknown challenge token\n".into())
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

#[cfg(test)]
mod tests {
    use super::*;
    use portico_protocol::{
        ChallengeAnswer, ConfigVersion, EdgeSettings, HostConfig, PROTOCOL_VERSION, Snapshot,
    };

    fn table(hosts: Vec<HostConfig>) -> RoutingTable {
        let snapshot = Snapshot {
            v: PROTOCOL_VERSION,
            version: ConfigVersion(1),
            hosts,
            certificates: vec![],
            challenges: vec![ChallengeAnswer::Http01 {
                token: "tok".into(),
                key_authorization: "tok.key".into(),
            }],
            settings: EdgeSettings {
                max_request_body_bytes: 100,
                ..EdgeSettings::default()
            },
        };
        RoutingTable::from_snapshot(&snapshot).unwrap()
    }

    fn host(name: &str, redirects: Vec<Redirect>) -> HostConfig {
        let mut h = HostConfig::new(name);
        h.targets = vec!["10.0.0.1:80".into()];
        h.redirects = redirects;
        h
    }

    fn facts<'a>(
        host: &'a str,
        path: &'a str,
        tls: bool,
        sni: Option<&'a str>,
    ) -> RequestFacts<'a> {
        RequestFacts {
            host,
            path_and_query: path,
            tls,
            sni,
            content_length: None,
        }
    }

    fn status(d: &Decision) -> u16 {
        match d {
            Decision::Respond { status, .. } => *status,
            Decision::Redirect(_) => 308,
            Decision::Proxy { .. } => 0,
            Decision::FetchChallenge(_) => 1,
        }
    }

    #[test]
    fn challenges_are_answered_on_plain_http_only() {
        let t = table(vec![host("a.example.com", vec![Redirect::ToHttps])]);
        let d = decide(
            &t,
            &facts(
                "a.example.com",
                "/.well-known/acme-challenge/tok",
                false,
                None,
            ),
        );
        assert_eq!(
            d,
            Decision::Respond {
                status: 200,
                content_type: "text/plain",
                body: "tok.key".into()
            }
        );
        // A token the table lacks is asked for; a malformed one is not.
        assert_eq!(
            decide(
                &t,
                &facts(
                    "x.example.com",
                    "/.well-known/acme-challenge/nope",
                    false,
                    None
                )
            ),
            Decision::FetchChallenge("nope".into())
        );
        for path in ["nope?x=1", "a/b", "", "%2e%2e"] {
            let path = format!("/.well-known/acme-challenge/{path}");
            assert_eq!(
                status(&decide(&t, &facts("x.example.com", &path, false, None))),
                404,
                "{path}"
            );
        }
        // Over TLS the path is an ordinary request.
        assert_eq!(
            status(&decide(
                &t,
                &facts(
                    "a.example.com",
                    "/.well-known/acme-challenge/tok",
                    true,
                    Some("a.example.com")
                )
            )),
            0
        );
    }

    #[test]
    fn host_must_match_sni() {
        let t = table(vec![
            host("a.example.com", vec![]),
            host("b.example.com", vec![]),
        ]);
        assert_eq!(
            status(&decide(
                &t,
                &facts("b.example.com", "/", true, Some("a.example.com"))
            )),
            421
        );
        assert_eq!(
            status(&decide(
                &t,
                &facts("a.example.com", "/", true, Some("a.example.com"))
            )),
            0
        );
        // No SNI (an IP-literal connection): nothing to compare.
        assert_eq!(
            status(&decide(&t, &facts("a.example.com", "/", true, None))),
            0
        );
    }

    #[test]
    fn redirects_compose_and_keep_the_path() {
        let t = table(vec![
            host(
                "www.example.org",
                vec![Redirect::ToHttps, Redirect::WwwToApex],
            ),
            host("example.net", vec![Redirect::ApexToWww]),
            host("www.example.net", vec![Redirect::ApexToWww]),
        ]);
        assert_eq!(
            decide(&t, &facts("www.example.org", "/a?b", false, None)),
            Decision::Redirect("https://example.org/a?b".into())
        );
        assert_eq!(
            decide(
                &t,
                &facts("www.example.org", "/a", true, Some("www.example.org"))
            ),
            Decision::Redirect("https://example.org/a".into())
        );
        assert_eq!(
            decide(&t, &facts("example.net", "/", false, None)),
            Decision::Redirect("http://www.example.net/".into())
        );
        assert_eq!(
            status(&decide(&t, &facts("www.example.net", "/", false, None))),
            0,
            "no loop"
        );
    }

    #[test]
    fn unknown_hosts_oversized_bodies_and_targetless_routes() {
        let mut bare = HostConfig::new("bare.example.com");
        bare.targets = vec![];
        let t = table(vec![host("a.example.com", vec![]), bare]);
        assert_eq!(
            status(&decide(&t, &facts("nobody.example.com", "/", false, None))),
            404
        );
        let mut big = facts("a.example.com", "/", false, None);
        big.content_length = Some(101);
        assert_eq!(status(&decide(&t, &big)), 413);
        assert_eq!(
            status(&decide(&t, &facts("bare.example.com", "/", false, None))),
            502
        );
    }
}
