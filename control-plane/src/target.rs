//! Upstream targets: where an edge forwards a domain's traffic. Accepted as
//! `host:port` or as a URL (`http://host[:port]`, `https://host[:port]`, no
//! path). Parsed once at the API boundary into [`Target`]; stored and shown in
//! the canonical `host:port` form with the TLS choice kept separately.

use serde::Serialize;
use std::fmt;
use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Target {
    host: String,
    port: u16,
    /// `Some(true)` when given as an `https://` URL, `Some(false)` for `http://`.
    scheme_tls: Option<bool>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("target {0:?} is not `host:port` or an http(s) URL")]
    Malformed(String),
    #[error("target {0:?} has a path, query or credentials; give only scheme, host and port")]
    HasPath(String),
    #[error("target port must be between 1 and 65535")]
    BadPort,
    #[error("target host {0:?} is not a valid hostname or IP address")]
    BadHost(String),
    #[error(
        "target {0:?} points at a loopback, link-local, multicast or unspecified address; the edge will not proxy there"
    )]
    LocalAddress(String),
}

impl Target {
    pub fn parse(input: &str, allow_local: bool) -> Result<Self, TargetError> {
        let shown: String = input.chars().take(80).collect();
        let (scheme_tls, rest) = if let Some(r) = input.strip_prefix("https://") {
            (Some(true), r)
        } else if let Some(r) = input.strip_prefix("http://") {
            (Some(false), r)
        } else if input.contains("://") {
            return Err(TargetError::Malformed(shown));
        } else {
            (None, input)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(TargetError::HasPath(shown));
        }
        let (host, port) =
            split_host_port(rest, scheme_tls).ok_or(TargetError::Malformed(shown.clone()))?;
        let port: u16 = port.parse().map_err(|_| TargetError::BadPort)?;
        if port == 0 {
            return Err(TargetError::BadPort);
        }
        let host = canonical_host(host).ok_or(TargetError::BadHost(shown.clone()))?;
        if !allow_local && is_local(&host) {
            return Err(TargetError::LocalAddress(shown));
        }
        Ok(Target {
            host,
            port,
            scheme_tls,
        })
    }

    /// The value read back from our own database (`host:port`).
    pub fn from_stored(value: &str) -> Option<Self> {
        let (host, port) = split_host_port(value, None)?;
        Some(Target {
            host: host.to_string(),
            port: port.parse().ok()?,
            scheme_tls: None,
        })
    }

    pub fn scheme_tls(&self) -> Option<bool> {
        self.scheme_tls
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        t.to_string()
    }
}

/// Splits `host:port`, `[v6]:port`, or a bare host when a scheme gives the port.
fn split_host_port(s: &str, scheme_tls: Option<bool>) -> Option<(&str, &str)> {
    let default_port = scheme_tls.map(|tls| if tls { "443" } else { "80" });
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, port)),
            None if after.is_empty() => Some((host, default_port?)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, port)),
        Some(_) => None,
        None => Some((s, default_port?)),
    }
}

fn canonical_host(host: &str) -> Option<String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let ldh = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (host.len() <= 253 && host.split('.').all(ldh)).then_some(host)
}

fn is_local(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            ip.is_loopback()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_multicast()
                || ip.is_broadcast()
        }
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (ip.segments()[0] & 0xffc0) == 0xfe80
        }
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms_are_canonicalised() {
        let cases = [
            ("app.example.com:8080", "app.example.com:8080", None),
            ("https://App.Example.com", "app.example.com:443", Some(true)),
            ("http://app.example.com/", "app.example.com:80", Some(false)),
            ("http://10.0.0.5:3000", "10.0.0.5:3000", Some(false)),
            ("[2001:db8::1]:443", "[2001:db8::1]:443", None),
        ];
        for (input, shown, tls) in cases {
            let t = Target::parse(input, false).unwrap();
            assert_eq!(t.to_string(), shown, "{input}");
            assert_eq!(t.scheme_tls(), tls, "{input}");
            assert_eq!(Target::from_stored(shown).unwrap().to_string(), shown);
        }
    }

    #[test]
    fn bad_targets_are_rejected_with_a_reason() {
        assert!(matches!(
            Target::parse("app.example.com", false),
            Err(TargetError::Malformed(_))
        ));
        assert!(matches!(
            Target::parse("ftp://x.com", false),
            Err(TargetError::Malformed(_))
        ));
        assert!(matches!(
            Target::parse("https://x.com/path", false),
            Err(TargetError::HasPath(_))
        ));
        assert!(matches!(
            Target::parse("https://u:p@x.com", false),
            Err(TargetError::HasPath(_))
        ));
        assert_eq!(Target::parse("x.com:0", false), Err(TargetError::BadPort));
        assert_eq!(
            Target::parse("x.com:70000", false),
            Err(TargetError::BadPort)
        );
        assert!(matches!(
            Target::parse("bad host:80", false),
            Err(TargetError::BadHost(_))
        ));
        assert!(matches!(
            Target::parse("127.0.0.1:80", false),
            Err(TargetError::LocalAddress(_))
        ));
        assert!(matches!(
            Target::parse("169.254.169.254:80", false),
            Err(TargetError::LocalAddress(_))
        ));
        assert!(matches!(
            Target::parse("[::1]:80", false),
            Err(TargetError::LocalAddress(_))
        ));
        assert!(Target::parse("127.0.0.1:80", true).is_ok());
    }
}
