//! The SSRF guard: a webhook URL must not lead the platform to its own
//! network. Addresses are classified by [`forbidden_reason`]; an endpoint is
//! refused at creation when its host is (or resolves to) a forbidden address,
//! and checked again at send time by [`GuardedResolve`], the resolver the
//! HTTP client connects through, so the connection goes to an address that
//! was checked (a DNS answer that changes after creation — rebinding — does
//! not get through). Operators may allow private targets (dev mode, tests).

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Why an address may not be a webhook target; `None` for a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = match (a, b, c) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "metadata",
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (100, 64..=127, _) => "cgnat",
        (169, 254, _) => "link_local",
        (192, 0, 0) => "reserved",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    };
    Some(reason)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let reason = match s[0] {
        // ::ffff:a.b.c.d and the deprecated ::a.b.c.d
        0 if s[1..5] == [0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) => "ipv4_mapped",
        // NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48) reaches IPv4 behind a translator.
        0x64 if s[1] == 0xff9b => "nat64",
        0x100 if s[1..4] == [0, 0, 0] => "discard",
        // Teredo and 6to4 tunnel to arbitrary IPv4 addresses.
        0x2001 if s[1] == 0 => "teredo",
        0x2002 => "6to4",
        x if x & 0xfe00 == 0xfc00 => "unique_local",
        x if x & 0xffc0 == 0xfe80 => "link_local",
        x if x & 0xffc0 == 0xfec0 => "site_local",
        x if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    };
    Some(reason)
}

/// A refused URL: a stable code and a message for the customer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

fn refusal(code: &'static str, message: String) -> Refusal {
    Refusal { code, message }
}

/// Longest accepted endpoint URL.
pub const MAX_URL_LEN: usize = 2048;

/// Parses an endpoint URL (syntax and scheme only; [`Guard::check`] does
/// the addresses).
pub fn parse_url(raw: &str, allow_http: bool) -> Result<url::Url, Refusal> {
    if raw.len() > MAX_URL_LEN {
        return Err(refusal(
            "too_long",
            format!("at most {MAX_URL_LEN} characters"),
        ));
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(refusal(
            "invalid_url",
            "contains whitespace or control characters".into(),
        ));
    }
    let url = url::Url::parse(raw).map_err(|e| refusal("invalid_url", format!("{e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(refusal(
                "https_required",
                "must use https:// (plain http is allowed only in development)".into(),
            ));
        }
        other => {
            return Err(refusal(
                "unsupported_scheme",
                format!("scheme {other:?} is not supported; use https://"),
            ));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refusal(
            "credentials_in_url",
            "must not contain a user name or password".into(),
        ));
    }
    if url.fragment().is_some() {
        return Err(refusal("fragment", "must not contain a #fragment".into()));
    }
    if url.host().is_none() {
        return Err(refusal("invalid_url", "has no host".into()));
    }
    if url.port() == Some(0) {
        return Err(refusal("invalid_url", "port 0 is not a port".into()));
    }
    Ok(url)
}

/// Looks up the addresses of a hostname. Injected so tests control DNS.
pub trait HostResolver: Send + Sync {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;
}

/// hickory, asking the given nameservers (or the system's), never caching:
/// each send sees the current answer.
pub struct HickoryResolver(hickory_resolver::TokioResolver);

impl HickoryResolver {
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> io::Result<Self> {
        use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
        use hickory_resolver::net::runtime::TokioRuntimeProvider;
        let (config, mut opts) = if nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf().map_err(io::Error::other)?
        } else {
            let servers: Vec<NameServerConfig> = nameservers
                .iter()
                .map(|a| {
                    let mut server = NameServerConfig::udp_and_tcp(a.ip());
                    for connection in &mut server.connections {
                        connection.port = a.port();
                    }
                    server
                })
                .collect();
            (
                ResolverConfig::from_name_servers(servers),
                Default::default(),
            )
        };
        opts.timeout = timeout;
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        let resolver = hickory_resolver::TokioResolver::builder_with_config(
            config,
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()
        .map_err(io::Error::other)?;
        Ok(HickoryResolver(resolver))
    }
}

impl HostResolver for HickoryResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>> {
        Box::pin(async move {
            let found = self.0.lookup_ip(host).await.map_err(io::Error::other)?;
            Ok(found.iter().collect())
        })
    }
}

/// The resolver and the operator's choice, shared by the API (creation
/// check) and the sender (send-time check).
#[derive(Clone)]
pub struct Guard {
    pub resolver: Arc<dyn HostResolver>,
    pub allow_private: bool,
}

impl Guard {
    /// The addresses `url` may be sent to, or why it is refused.
    pub async fn check(&self, url: &url::Url) -> Result<Vec<IpAddr>, Refusal> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.allowed(vec![IpAddr::V4(ip)], &ip.to_string()),
            Some(url::Host::Ipv6(ip)) => self.allowed(vec![IpAddr::V6(ip)], &ip.to_string()),
            Some(url::Host::Domain(name)) => {
                let found = self.resolve(name).await?;
                self.allowed(found, name)
            }
            None => Err(refusal("invalid_url", "has no host".into())),
        }
    }

    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, Refusal> {
        let found = self
            .resolver
            .lookup(name)
            .await
            .map_err(|e| refusal("unresolvable", format!("{name} does not resolve: {e}")))?;
        if found.is_empty() {
            return Err(refusal(
                "unresolvable",
                format!("{name} has no A or AAAA records"),
            ));
        }
        Ok(found)
    }

    fn allowed(&self, ips: Vec<IpAddr>, host: &str) -> Result<Vec<IpAddr>, Refusal> {
        if self.allow_private {
            return Ok(ips);
        }
        for ip in &ips {
            if let Some(reason) = forbidden_reason(*ip) {
                return Err(refusal(
                    "forbidden_address",
                    format!(
                        "{host} resolves to {ip} ({reason}); webhooks must reach public addresses"
                    ),
                ));
            }
        }
        Ok(ips)
    }
}

/// The HTTP client's DNS: resolves through the [`Guard`] and hands the
/// client only checked addresses, so it connects to what was checked.
pub struct GuardedResolve(pub Guard);

impl reqwest::dns::Resolve for GuardedResolve {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let ips = guard.resolve(&host).await?;
            let ips = guard.allowed(ips, &host)?;
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_ranges_are_named() {
        let cases = [
            ("127.0.0.1", "loopback"),
            ("127.255.1.2", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "cgnat"),
            ("100.127.255.254", "cgnat"),
            ("169.254.169.254", "metadata"),
            ("169.254.1.1", "link_local"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "ipv4_mapped"),
            ("::ffff:8.8.8.8", "ipv4_mapped"),
            ("::127.0.0.1", "ipv4_mapped"),
            ("64:ff9b::7f00:1", "nat64"),
            ("fc00::1", "unique_local"),
            ("fd00:ec2::254", "unique_local"),
            ("fe80::1", "link_local"),
            ("ff02::1", "multicast"),
            ("2002:7f00:1::", "6to4"),
            ("2001:0:4136:e378::1", "teredo"),
        ];
        for (ip, reason) in cases {
            assert_eq!(forbidden_reason(ip.parse().unwrap()), Some(reason), "{ip}");
        }
        for ok in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "1.1.1.1",
            "2606:4700::1111",
            "192.0.2.1",
        ] {
            assert_eq!(forbidden_reason(ok.parse().unwrap()), None, "{ok}");
        }
    }

    #[test]
    fn urls_are_parsed_strictly() {
        assert!(parse_url("https://hooks.example.com/x?y=1", false).is_ok());
        let code = |u: &str, http| parse_url(u, http).unwrap_err().code;
        assert_eq!(code("http://hooks.example.com", false), "https_required");
        assert!(parse_url("http://hooks.example.com", true).is_ok());
        assert_eq!(code("ftp://hooks.example.com", true), "unsupported_scheme");
        assert_eq!(
            code("https://u:p@hooks.example.com", false),
            "credentials_in_url"
        );
        assert_eq!(code("https://hooks.example.com/#x", false), "fragment");
        assert_eq!(code("not a url", false), "invalid_url");
        assert_eq!(code("https://", false), "invalid_url");
        assert_eq!(code("https://h.example.com:0/", false), "invalid_url");
        assert_eq!(code("https://h.example.com/\u{0}", false), "invalid_url");
        let long = format!("https://h.example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(code(&long, false), "too_long");
    }

    proptest::proptest! {
        /// No IPv6 spelling of an IPv4 address gets through, whatever the address.
        #[test]
        fn ipv6_forms_of_ipv4_are_always_refused(v4 in proptest::prelude::any::<u32>()) {
            let v4 = Ipv4Addr::from(v4);
            let [a, b, c, d] = v4.octets();
            let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
            let six_to_four = Ipv6Addr::new(0x2002, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]), 0, 0, 0, 0, 1);
            for ip in [v4.to_ipv6_mapped(), nat64, six_to_four] {
                proptest::prop_assert!(forbidden_reason(IpAddr::V6(ip)).is_some(), "{ip}");
            }
        }

        /// Hostile strings are refused or parsed, never a panic, and what
        /// parses is https with a host.
        #[test]
        fn parse_url_never_panics(raw in "\\PC{0,80}", tail in "[a-z0-9:/@.\\[\\]%#?-]{0,40}") {
            for candidate in [raw.clone(), format!("https://{tail}"), format!("https://{raw}")] {
                if let Ok(url) = parse_url(&candidate, false) {
                    proptest::prop_assert_eq!(url.scheme(), "https");
                    proptest::prop_assert!(url.host().is_some());
                }
            }
        }
    }

    struct Fixed(Vec<IpAddr>);

    impl HostResolver for Fixed {
        fn lookup<'a>(
            &'a self,
            _host: &'a str,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>> {
            let ips = self.0.clone();
            Box::pin(async move { Ok(ips) })
        }
    }

    fn guard(ips: &[&str], allow_private: bool) -> Guard {
        Guard {
            resolver: Arc::new(Fixed(ips.iter().map(|i| i.parse().unwrap()).collect())),
            allow_private,
        }
    }

    #[tokio::test]
    async fn names_are_checked_through_the_resolver() {
        let url = parse_url("https://hooks.example.com/", false).unwrap();
        assert!(guard(&["8.8.8.8"], false).check(&url).await.is_ok());
        let e = guard(&["8.8.8.8", "127.0.0.1"], false)
            .check(&url)
            .await
            .unwrap_err();
        assert_eq!(e.code, "forbidden_address");
        assert!(e.message.contains("loopback"), "{e}");
        assert_eq!(
            guard(&[], false).check(&url).await.unwrap_err().code,
            "unresolvable"
        );
        assert!(guard(&["127.0.0.1"], true).check(&url).await.is_ok());
        let literal = parse_url("https://[::1]:8443/", false).unwrap();
        assert_eq!(
            guard(&[], false).check(&literal).await.unwrap_err().code,
            "forbidden_address"
        );
    }
}
