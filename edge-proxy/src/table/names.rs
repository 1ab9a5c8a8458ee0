//! Name rules of the routing table: normalising names seen on the wire,
//! validating configured hostnames, and parsing `host:port` targets.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// An upstream of a route, parsed from `host:port` or `[v6]:port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// Hostname or IP address, without brackets.
    pub host: String,
    /// TCP port, never 0.
    pub port: u16,
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

/// A configured name, split into the key of the map it belongs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum NameKey {
    /// `shop.example.com`, keyed by itself.
    Exact(String),
    /// `*.example.com`, keyed by its parent `example.com`.
    Wildcard(String),
}

/// Lowercases a `Host` header or SNI and strips a `:port` and one trailing
/// dot. Borrows when nothing needs changing, which is the common case.
pub(super) fn normalise(raw: &str) -> Cow<'_, str> {
    let name = strip_port(raw);
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// The parent a wildcard would be keyed by: `example.com` for
/// `a.example.com`; none for a single label or a literal `*` label.
pub(super) fn wildcard_parent(name: &str) -> Option<&str> {
    let (label, parent) = name.split_once('.')?;
    (!label.is_empty() && label != "*" && !parent.is_empty()).then_some(parent)
}

/// Validates a configured hostname or certificate name.
pub(super) fn parse_name(name: &str) -> Result<NameKey, &'static str> {
    if name.len() > 253 {
        return Err("is longer than 253 characters");
    }
    match name.strip_prefix("*.") {
        Some(parent) => check_dns_name(parent).map(|()| NameKey::Wildcard(parent.to_owned())),
        None => check_dns_name(name).map(|()| NameKey::Exact(name.to_owned())),
    }
}

/// Parses an upstream `host:port`; IPv6 addresses must be bracketed.
pub(super) fn parse_target(raw: &str) -> Result<Target, &'static str> {
    let (host, port) = match raw.strip_prefix('[') {
        Some(rest) => {
            let (host, port) = rest.split_once("]:").ok_or("must be [ipv6-address]:port")?;
            host.parse::<Ipv6Addr>()
                .map_err(|_| "has an invalid IPv6 address")?;
            (host, port)
        }
        None => {
            let (host, port) = raw.rsplit_once(':').ok_or("must be host:port")?;
            check_upstream_host(host)?;
            (host, port)
        }
    };
    Ok(Target {
        host: host.to_owned(),
        port: parse_port(port)?,
    })
}

/// Validates an upstream SNI: a DNS name in any case, not an IP address.
pub(super) fn check_sni(sni: &str) -> Result<(), &'static str> {
    if sni.parse::<Ipv4Addr>().is_ok() {
        return Err("is an IP address, not a DNS name");
    }
    check_upstream_host(sni)
}

/// Validates an ACME HTTP-01 token: base64url, as RFC 8555 requires.
pub(super) fn check_token(token: &str) -> Result<(), &'static str> {
    if token.is_empty() || token.len() > 256 {
        return Err("must be 1 to 256 characters");
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("must be base64url (letters, digits, '-', '_')");
    }
    Ok(())
}

fn strip_port(raw: &str) -> &str {
    if let Some(rest) = raw.strip_prefix('[') {
        // An IPv6 literal: keep "[addr]", drop whatever follows.
        return match rest.find(']') {
            Some(end) => &raw[..end + 2],
            None => raw,
        };
    }
    raw.split_once(':').map_or(raw, |(host, _)| host)
}

/// Lowercase LDH labels of 1–63 characters, no leading or trailing hyphen.
fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.ends_with('.') {
        return Err("has a trailing dot");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("has an empty label");
        }
        if label.len() > 63 {
            return Err("has a label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("must be lowercase letters, digits and hyphens (an A-label)");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a label starting or ending with a hyphen");
        }
    }
    Ok(())
}

/// An upstream hostname or IPv4 address: letters, digits, `-`, `_`, `.`.
fn check_upstream_host(host: &str) -> Result<(), &'static str> {
    if host.is_empty() || host.len() > 253 {
        return Err("host must be 1 to 253 characters");
    }
    if host.contains(':') {
        return Err("IPv6 addresses must be bracketed, as [address]:port");
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !host.bytes().all(allowed) || host.split('.').any(str::is_empty) {
        return Err("host must be a DNS name or an IPv4 address");
    }
    Ok(())
}

fn parse_port(port: &str) -> Result<u16, &'static str> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port must be a number");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("port must be 1 to 65535"),
        Ok(port) => Ok(port),
    }
}
