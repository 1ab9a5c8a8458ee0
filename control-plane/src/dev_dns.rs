//! The DNS server of dev mode: answers the way a correctly configured
//! customer zone would, so that domains added in dev mode are verified with
//! no network and no real DNS.
//!
//! [`DnsListeners::bind`] takes a free port on `127.0.0.1` (UDP and TCP), so
//! the settings can name it in `PORTICO_DNS_NAMESERVERS`;
//! [`DevDns::serve`] then answers from a [`DevZone`] until [`DevDns::stop`].
//! For every name it answers what the control plane tells customers to
//! create ([`crate::dns::Expected::records`]):
//!
//! - a subdomain is a `CNAME` to the platform target (`PORTICO_CNAME_TARGET`),
//!   and, like a recursive resolver, an `A`/`AAAA` query gets the CNAME
//!   followed by the target's addresses;
//! - an apex (its own registrable domain) and the target itself have `A`
//!   (`AAAA`) records: the edge addresses (`PORTICO_EDGE_IPV4`/`_IPV6`;
//!   `127.0.0.1` when none are set);
//! - `_portico-challenge.NAME` has a `TXT` `portico-verify=<token>` for each
//!   domain `NAME` or `*.NAME` in the `domains` table, nothing else;
//! - any other name under an underscore label, and CAA everywhere, is
//!   NOERROR with no records (no CAA record: every CA may issue).
//!
//! Records have TTL 0. A failed token lookup is a SERVFAIL, which the
//! checker treats as "unknown, retry later", never as wrong.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use sqlx::PgPool;
use tokio::net::{TcpListener, UdpSocket};

use crate::hostname::Hostname;
use crate::settings::PlatformSettings;

/// The label under which ownership TXT records live.
const CHALLENGE_LABEL: &str = "_portico-challenge.";
/// Idle timeout of a TCP connection.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_BUFFER: usize = 32;
/// Attempts at finding a port free for both UDP and TCP.
const BIND_ATTEMPTS: usize = 32;

/// Where the verification tokens of a hostname come from.
#[async_trait::async_trait]
pub trait VerificationTokens: Send + Sync + Unpin + 'static {
    /// The tokens of the domains named `hostname` or `*.hostname`.
    async fn tokens(&self, hostname: &str) -> Result<Vec<String>, sqlx::Error>;
}

#[async_trait::async_trait]
impl VerificationTokens for PgPool {
    async fn tokens(&self, hostname: &str) -> Result<Vec<String>, sqlx::Error> {
        // Plain `query`: dev-only SQL, kept out of the offline query cache.
        sqlx::query_scalar(
            "SELECT verification_token FROM domains WHERE hostname = $1 OR hostname = $2",
        )
        .bind(hostname)
        .bind(format!("*.{hostname}"))
        .fetch_all(self)
        .await
    }
}

/// The zone dev mode serves: the platform's target and addresses, and where
/// the verification tokens are.
pub struct DevZone<T> {
    cname_target: String,
    edge_ipv4: Vec<Ipv4Addr>,
    edge_ipv6: Vec<Ipv6Addr>,
    tokens: T,
}

impl<T: VerificationTokens> DevZone<T> {
    /// The zone of `platform`, with tokens from `tokens`.
    pub fn new(platform: &PlatformSettings, tokens: T) -> Self {
        let edge_ipv4 = match platform.edge_ipv4.as_slice() {
            [] => vec![Ipv4Addr::LOCALHOST],
            ips => ips.to_vec(),
        };
        DevZone {
            cname_target: normalize(platform.cname_target.as_str()),
            edge_ipv4,
            edge_ipv6: platform.edge_ipv6.clone(),
            tokens,
        }
    }

    /// The answer records for one question, or the token lookup's error.
    async fn answer(&self, qname: &str, qtype: RecordType) -> Result<Vec<Record>, sqlx::Error> {
        match self.owner(qname) {
            Owner::Challenge(host) if qtype == RecordType::TXT => {
                let tokens = self.tokens.tokens(&host).await?;
                Ok(tokens
                    .iter()
                    .filter_map(|t| record(qname, RData::TXT(TXT::new(vec![txt_value(t)]))))
                    .collect())
            }
            owner => Ok(self.records(qname, owner, qtype)),
        }
    }

    /// What kind of name `qname` is in this zone.
    fn owner(&self, qname: &str) -> Owner {
        if qname == self.cname_target {
            Owner::Addresses
        } else if let Some(host) = qname.strip_prefix(CHALLENGE_LABEL) {
            Owner::Challenge(host.to_string())
        } else if qname.starts_with('_') || qname.contains("._") {
            Owner::Nothing
        } else if Hostname::from_stored(qname.to_string()).is_apex() {
            Owner::Addresses
        } else {
            Owner::Alias
        }
    }

    /// The records at `qname` that need no token lookup.
    fn records(&self, qname: &str, owner: Owner, qtype: RecordType) -> Vec<Record> {
        match owner {
            Owner::Addresses => self.addresses(qname, qtype),
            Owner::Alias => {
                let target = fqdn(&self.cname_target).map(|t| RData::CNAME(CNAME(t)));
                let mut answers: Vec<Record> =
                    target.and_then(|t| record(qname, t)).into_iter().collect();
                if qtype != RecordType::CNAME {
                    answers.extend(self.addresses(&self.cname_target, qtype));
                }
                answers
            }
            Owner::Challenge(_) | Owner::Nothing => Vec::new(),
        }
    }

    /// The edge addresses of type `qtype`, owned by `name`.
    fn addresses(&self, name: &str, qtype: RecordType) -> Vec<Record> {
        let data: Vec<RData> = match qtype {
            RecordType::A => self.edge_ipv4.iter().map(|ip| RData::A(A(*ip))).collect(),
            RecordType::AAAA => self
                .edge_ipv6
                .iter()
                .map(|ip| RData::AAAA(AAAA(*ip)))
                .collect(),
            _ => Vec::new(),
        };
        data.into_iter().filter_map(|d| record(name, d)).collect()
    }
}

/// What a name holds.
#[derive(Debug, PartialEq, Eq)]
enum Owner {
    /// The target or an apex: the edge addresses.
    Addresses,
    /// A subdomain: a CNAME to the target.
    Alias,
    /// `_portico-challenge.<host>`: the TXT of the host's domains.
    Challenge(String),
    /// Another underscore name: nothing.
    Nothing,
}

/// UDP and TCP sockets on one free port of `127.0.0.1`, bound before the
/// settings are read so that they can name the port.
pub struct DnsListeners {
    udp: UdpSocket,
    tcp: TcpListener,
    addr: SocketAddr,
}

impl DnsListeners {
    /// Binds UDP and TCP on the same ephemeral port of `127.0.0.1`.
    pub async fn bind() -> std::io::Result<Self> {
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            let addr = udp.local_addr()?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => return Ok(DnsListeners { udp, tcp, addr }),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| std::io::Error::other("no free port for UDP and TCP")))
    }

    /// The address to send queries to (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The running server; [`DevDns::stop`] ends it, dropping it aborts it.
pub struct DevDns<T: VerificationTokens> {
    addr: SocketAddr,
    server: Server<Handler<T>>,
}

impl<T: VerificationTokens> DevDns<T> {
    /// Answers queries on `listeners` from `zone`.
    pub fn serve(listeners: DnsListeners, zone: DevZone<T>) -> Self {
        let mut server = Server::new(Handler { zone });
        server.register_socket(listeners.udp);
        server.register_listener(listeners.tcp, TCP_TIMEOUT, TCP_BUFFER);
        tracing::debug!(addr = %listeners.addr, "dev DNS server started");
        DevDns {
            addr: listeners.addr,
            server,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering and waits for the server's tasks to end.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.server
            .shutdown_gracefully()
            .await
            .map_err(|e| anyhow::anyhow!("stopping the dev DNS server: {e}"))
    }
}

/// Answers queries from a [`DevZone`].
struct Handler<T> {
    zone: DevZone<T>,
}

impl<T: VerificationTokens> Handler<T> {
    async fn respond<R: ResponseHandler>(&self, request: &Request, mut handle: R) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = true;
        let (code, answers) = match request.queries.queries().first() {
            Some(_) if request.metadata.op_code != OpCode::Query => {
                (ResponseCode::NotImp, Vec::new())
            }
            Some(query) => {
                let qname = normalize(&query.name().to_string());
                match self.zone.answer(&qname, query.query_type()).await {
                    Ok(answers) => (ResponseCode::NoError, answers),
                    Err(error) => {
                        tracing::warn!(%error, name = %qname, "dev DNS: token lookup failed");
                        (ResponseCode::ServFail, Vec::new())
                    }
                }
            }
            None => (ResponseCode::FormErr, Vec::new()),
        };
        metadata.response_code = code;
        let edns = request.edns.as_ref().map(|requested| {
            let mut edns = Edns::new();
            edns.set_max_payload(requested.max_payload().max(512));
            edns
        });
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            answers.iter(),
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
        );
        match handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, "dev DNS: cannot send a response");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

#[async_trait::async_trait]
impl<T: VerificationTokens> RequestHandler for Handler<T> {
    async fn handle_request<R: ResponseHandler, U: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.respond(request, response_handle).await
    }
}

/// The TXT value of a token.
fn txt_value(token: &str) -> String {
    format!("portico-verify={token}")
}

/// A record with TTL 0; `None` if `owner` is not a valid name.
fn record(owner: &str, data: RData) -> Option<Record> {
    Some(Record::from_rdata(fqdn(owner)?, 0, data))
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.", normalize(name))).ok()
}

fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{DnsChecker, DnsSettings, Reason, Verdict};
    use crate::settings::Settings;
    use std::collections::HashMap;

    /// Tokens by hostname, as the `domains` table would hold them.
    struct Tokens(HashMap<String, String>);

    #[async_trait::async_trait]
    impl VerificationTokens for Tokens {
        async fn tokens(&self, hostname: &str) -> Result<Vec<String>, sqlx::Error> {
            let wildcard = format!("*.{hostname}");
            Ok([hostname, wildcard.as_str()]
                .iter()
                .filter_map(|h| self.0.get(*h).cloned())
                .collect())
        }
    }

    /// A database that is down.
    struct Down;

    #[async_trait::async_trait]
    impl VerificationTokens for Down {
        async fn tokens(&self, _: &str) -> Result<Vec<String>, sqlx::Error> {
            Err(sqlx::Error::PoolTimedOut)
        }
    }

    fn settings() -> Settings {
        let env = [("DATABASE_URL", "x"), ("PORTICO_EDGE_IPV4", "127.0.0.1")];
        Settings::from_sources(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
    }

    async fn serve<T: VerificationTokens>(settings: &Settings, tokens: T) -> DevDns<T> {
        let listeners = DnsListeners::bind().await.unwrap();
        DevDns::serve(listeners, DevZone::new(&settings.platform, tokens))
    }

    /// What the verification job would conclude about `hostname`.
    async fn check(dns: SocketAddr, settings: &Settings, hostname: &str) -> crate::dns::Diagnosis {
        let checker = DnsChecker::new(&DnsSettings {
            nameservers: vec![dns],
            timeout: Duration::from_secs(2),
            attempts: 1,
        })
        .unwrap();
        let host = Hostname::from_stored(hostname.to_string());
        let expected = crate::verification::expected(settings, &host, "tok-1");
        let probe = hostname.trim_start_matches("*.");
        checker
            .check(probe, host.registrable_domain(), &expected)
            .await
    }

    #[tokio::test]
    async fn subdomains_apexes_and_wildcards_with_a_token_are_verified() {
        let settings = settings();
        let tokens = ["shop.example.com", "example.org", "*.apps.example.net"]
            .map(|h| (h.to_string(), "tok-1".to_string()));
        let dns = serve(&settings, Tokens(tokens.into_iter().collect())).await;
        let subdomain = check(dns.addr(), &settings, "shop.example.com").await;
        assert_eq!(subdomain.verdict, Verdict::Ok, "{subdomain:?}");
        assert!(subdomain.reasons.contains(&Reason::CnameOk));
        let apex = check(dns.addr(), &settings, "example.org").await;
        assert_eq!(apex.verdict, Verdict::Ok, "{apex:?}");
        assert!(apex.reasons.contains(&Reason::AOk));
        let wildcard = check(dns.addr(), &settings, "*.apps.example.net").await;
        assert_eq!(wildcard.verdict, Verdict::Ok, "{wildcard:?}");
        dns.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_name_without_a_domain_has_no_ownership_record() {
        let settings = settings();
        let dns = serve(&settings, Tokens(HashMap::new())).await;
        let d = check(dns.addr(), &settings, "shop.example.com").await;
        assert_eq!(d.verdict, Verdict::Wrong, "{d:?}");
        assert_eq!(d.routing, Verdict::Ok);
        assert!(d.reasons.contains(&Reason::TxtMissing), "{d:?}");
        dns.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_token_lookup_is_unknown_not_wrong() {
        let settings = settings();
        let dns = serve(&settings, Down).await;
        let d = check(dns.addr(), &settings, "shop.example.com").await;
        assert_eq!(d.verdict, Verdict::Unknown, "{d:?}");
        assert!(d.reasons.contains(&Reason::Servfail), "{d:?}");
        dns.stop().await.unwrap();
    }

    #[test]
    fn names_are_classified_like_a_customer_zone() {
        let zone = DevZone::new(&settings().platform, Tokens(HashMap::new()));
        assert_eq!(zone.owner("edge.portico.localhost"), Owner::Addresses);
        assert_eq!(zone.owner("example.co.uk"), Owner::Addresses);
        assert_eq!(zone.owner("shop.example.co.uk"), Owner::Alias);
        assert_eq!(
            zone.owner("_portico-challenge.shop.example.com"),
            Owner::Challenge("shop.example.com".to_string())
        );
        assert_eq!(
            zone.owner("_acme-challenge.shop.example.com"),
            Owner::Nothing
        );
        let cname = zone.records("shop.example.com", Owner::Alias, RecordType::CNAME);
        assert_eq!(cname.len(), 1, "only the CNAME: {cname:?}");
        let a = zone.records("shop.example.com", Owner::Alias, RecordType::A);
        assert_eq!(a.len(), 2, "the CNAME, then the target's A: {a:?}");
        assert!(
            zone.records("example.com", Owner::Addresses, RecordType::CAA)
                .is_empty()
        );
    }
}
