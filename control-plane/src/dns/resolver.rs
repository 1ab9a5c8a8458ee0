//! Asking the resolvers: [`DnsChecker`] turns a hostname into an
//! [`Observation`], one bounded query per record set, concurrently.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as WireError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{TokioResolver, lookup::Lookup};

use super::observation::{
    Answer, CaaRecord, MAX_CNAME_CHAIN, MAX_RECORDS_PER_ANSWER, MAX_VALUE_LEN, Observation,
    Queried, bounded, caa_names, normalize_name,
};
use super::{Diagnosis, DnsError, DnsSettings, Expected, diagnose};

/// Resolves what a [`Diagnosis`] needs. Cheap to clone; answers are never
/// cached, so every check sees the current state of DNS.
#[derive(Clone)]
pub struct DnsChecker {
    resolver: TokioResolver,
    /// Upper bound on one resolver call, a guard on top of the resolver's own
    /// per-attempt timeout (a call may chase CNAMEs and retry).
    call_budget: Duration,
}

impl DnsChecker {
    /// A checker asking `settings.nameservers` (UDP, then TCP when an answer
    /// is truncated), or the system resolvers when that list is empty.
    pub fn new(settings: &DnsSettings) -> Result<Self, DnsError> {
        if settings.timeout.is_zero() {
            return Err(DnsError::Settings("timeout must be positive"));
        }
        let (config, mut options) = if settings.nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| DnsError::SystemConfig(e.to_string()))?
        } else {
            let servers = settings.nameservers.iter().map(name_server).collect();
            (
                ResolverConfig::from_name_servers(servers),
                ResolverOpts::default(),
            )
        };
        let attempts = settings.attempts.max(1);
        options.timeout = settings.timeout;
        options.attempts = attempts;
        options.cache_size = 0;
        options.positive_max_ttl = Some(Duration::ZERO);
        options.negative_max_ttl = Some(Duration::ZERO);
        options.preserve_intermediates = true;
        options.use_hosts_file = ResolveHosts::Never;
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|e| DnsError::Resolver(e.to_string()))?;
        let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
        let call_budget = settings
            .timeout
            .saturating_mul(attempts)
            .saturating_mul(2)
            .saturating_add(Duration::from_millis(100));
        Ok(Self {
            resolver,
            call_budget,
        })
    }

    /// Resolve everything the diagnosis needs: the CNAME chain, A, AAAA, the
    /// ownership TXT name and CAA on the host and its parents up to the
    /// registrable domain. Record sets are asked concurrently; the CNAME
    /// chain is followed hop by hop. Every call is bounded by the configured
    /// timeout (see `call_budget`), so this always returns.
    pub async fn observe(
        &self,
        hostname: &str,
        registrable_domain: &str,
        expected: &Expected,
    ) -> Observation {
        let caa = caa_names(hostname, registrable_domain);
        let (cname, a, aaaa, txt, caa) = futures::join!(
            self.cname_chain(hostname),
            self.query(hostname, RecordType::A, |data| match data {
                RData::A(a) => Some(a.0),
                _ => None,
            }),
            self.query(hostname, RecordType::AAAA, |data| match data {
                RData::AAAA(aaaa) => Some(aaaa.0),
                _ => None,
            }),
            self.query(&expected.txt_name, RecordType::TXT, txt_value),
            futures::future::join_all(caa.iter().map(|name| async move {
                Queried::new(name, self.query(name, RecordType::CAA, caa_record).await)
            })),
        );
        Observation {
            hostname: normalize_name(hostname),
            cname,
            a,
            aaaa,
            txt: Queried::new(&expected.txt_name, txt),
            caa,
        }
    }

    /// [`Self::observe`], then [`diagnose`].
    pub async fn check(
        &self,
        hostname: &str,
        registrable_domain: &str,
        expected: &Expected,
    ) -> Diagnosis {
        diagnose(
            &self.observe(hostname, registrable_domain, expected).await,
            expected,
        )
    }

    /// Follow CNAMEs from `hostname`, one query per hop, until a name has no
    /// CNAME, a lookup fails, a name repeats or [`MAX_CNAME_CHAIN`] queries
    /// were made.
    async fn cname_chain(&self, hostname: &str) -> Vec<Queried<String>> {
        let mut chain: Vec<Queried<String>> = Vec::new();
        let mut name = normalize_name(hostname);
        while chain.len() < MAX_CNAME_CHAIN {
            let owner = name.clone();
            let answer = self
                .query_owned(&name, RecordType::CNAME, move |record| match &record.data {
                    RData::CNAME(cname) if same_name(&record.name, &owner) => {
                        Some(normalize_name(&cname.0.to_ascii()))
                    }
                    _ => None,
                })
                .await;
            let next = answer.records().and_then(|t| t.first()).cloned();
            chain.push(Queried::new(&name, answer));
            match next {
                Some(next) if !chain.iter().any(|hop| hop.name == next) => name = next,
                _ => break,
            }
        }
        chain
    }

    /// Ask for `record_type` at `name`, keeping the data `extract` accepts.
    async fn query<T>(
        &self,
        name: &str,
        record_type: RecordType,
        extract: impl Fn(&RData) -> Option<T>,
    ) -> Answer<T> {
        self.query_owned(name, record_type, |record| extract(&record.data))
            .await
    }

    /// Ask for `record_type` at `name`, keeping what `extract` accepts from
    /// each answer record (at most [`MAX_RECORDS_PER_ANSWER`]).
    async fn query_owned<T>(
        &self,
        name: &str,
        record_type: RecordType,
        extract: impl Fn(&Record) -> Option<T>,
    ) -> Answer<T> {
        let fqdn = match fqdn(name) {
            Ok(fqdn) => fqdn,
            Err(e) => return Answer::Other(e),
        };
        let lookup = self.resolver.lookup(fqdn, record_type);
        match bounded_call(self.call_budget, lookup).await {
            None => Answer::Timeout,
            Some(Ok(lookup)) => answer_from(&lookup, record_type, extract),
            Some(Err(error)) => answer_from_error(&error),
        }
    }
}

fn name_server(addr: &SocketAddr) -> NameServerConfig {
    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
    for connection in &mut server.connections {
        connection.port = addr.port();
    }
    server
}

async fn bounded_call<F: Future>(budget: Duration, call: F) -> Option<F::Output> {
    tokio::time::timeout(budget, call).await.ok()
}

fn fqdn(name: &str) -> Result<Name, String> {
    let name = normalize_name(name);
    Name::from_ascii(format!("{name}.")).map_err(|e| bounded(&format!("invalid name {name}: {e}")))
}

fn same_name(name: &Name, other: &str) -> bool {
    normalize_name(&name.to_ascii()) == other
}

fn answer_from<T>(
    lookup: &Lookup,
    record_type: RecordType,
    extract: impl Fn(&Record) -> Option<T>,
) -> Answer<T> {
    let records: Vec<T> = lookup
        .answers()
        .iter()
        .filter(|record| record.record_type() == record_type)
        .filter_map(extract)
        .take(MAX_RECORDS_PER_ANSWER)
        .collect();
    if records.is_empty() {
        Answer::NoRecords
    } else {
        Answer::Ok(records)
    }
}

fn answer_from_error<T>(error: &NetError) -> Answer<T> {
    match error {
        NetError::Dns(WireError::NoRecordsFound(NoRecords { response_code, .. })) => {
            match *response_code {
                ResponseCode::NXDomain => Answer::NxDomain,
                ResponseCode::NoError => Answer::NoRecords,
                ResponseCode::ServFail => Answer::ServFail,
                code => Answer::Other(bounded(&format!("DNS server answered {code}"))),
            }
        }
        NetError::Dns(WireError::ResponseCode(ResponseCode::ServFail)) => Answer::ServFail,
        NetError::Timeout => Answer::Timeout,
        NetError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => Answer::Timeout,
        other => Answer::Other(bounded(&other.to_string())),
    }
}

fn txt_value(data: &RData) -> Option<String> {
    match data {
        RData::TXT(txt) => {
            let bytes: Vec<u8> = txt
                .txt_data
                .iter()
                .flat_map(|s| s.iter().copied())
                .take(MAX_VALUE_LEN * 4)
                .collect();
            Some(bounded(&String::from_utf8_lossy(&bytes)))
        }
        _ => None,
    }
}

fn caa_record(data: &RData) -> Option<CaaRecord> {
    match data {
        RData::CAA(caa) => Some(CaaRecord {
            critical: caa.issuer_critical,
            tag: bounded(&caa.tag.to_ascii_lowercase()),
            value: bounded(&String::from_utf8_lossy(&caa.value)),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DnsSettings {
        DnsSettings {
            nameservers: vec![SocketAddr::from(([127, 0, 0, 1], 5353))],
            timeout: Duration::from_millis(500),
            attempts: 0,
        }
    }

    #[test]
    fn builds_outside_a_runtime_and_checks_are_send() -> Result<(), DnsError> {
        fn is_send_sync<T: Send + Sync + 'static>(_: &T) {}
        fn is_send<T: Send>(_: &T) {}
        let checker = DnsChecker::new(&settings())?;
        is_send_sync(&checker);
        let expected = Expected {
            hostname: "shop.bobs.io".to_owned(),
            is_apex: false,
            cname_target: None,
            a: Vec::new(),
            aaaa: Vec::new(),
            txt_name: "_portico-challenge.shop.bobs.io".to_owned(),
            txt_value: "portico-verify=x".to_owned(),
            ca_identities: Vec::new(),
        };
        is_send(&checker.check("shop.bobs.io", "bobs.io", &expected));
        Ok(())
    }

    #[test]
    fn rejects_a_zero_timeout() {
        let zero = DnsSettings {
            timeout: Duration::ZERO,
            ..settings()
        };
        assert!(matches!(DnsChecker::new(&zero), Err(DnsError::Settings(_))));
    }

    #[test]
    fn name_servers_keep_their_port_on_every_transport() {
        let server = name_server(&SocketAddr::from(([192, 0, 2, 1], 5300)));
        assert_eq!(server.connections.len(), 2);
        assert!(server.connections.iter().all(|c| c.port == 5300));
    }
}
