//! An in-process DNS server for tests, controlled at runtime.
//!
//! [`TestDns::start`] binds `127.0.0.1` on an ephemeral port, UDP and TCP on
//! the same port, and answers from a table the test edits with
//! [`TestDns::add`], [`TestDns::clear`], [`TestDns::servfail`] and
//! [`TestDns::silent`]. It behaves like a small authoritative server that
//! also claims recursion: unknown names are NXDOMAIN (a name that only has
//! names below it is an empty non-terminal: NOERROR, no data), a known name
//! without the asked type is NOERROR with an empty answer, and a CNAME is
//! returned — and followed through the table — for any other query type.
//! Records have TTL 0. Dropping the [`TestDns`] stops the server.

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CAA, CNAME, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

/// How many CNAMEs the server follows within its own data.
const MAX_CHASE: usize = 8;
/// Idle timeout of a TCP connection.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_BUFFER: usize = 32;

/// A record a test can serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TestRecord {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Txt(String),
    Caa { tag: String, value: String },
}

/// A running test DNS server; dropping it stops the server.
pub struct TestDns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    server: Server<Handler>,
}

impl TestDns {
    /// Start a server on `127.0.0.1`, UDP and TCP on the same ephemeral port.
    pub async fn start() -> anyhow::Result<TestDns> {
        Self::serve(bind_pair().await?)
    }

    /// Start a server on `addr` (UDP and TCP), e.g. inside a network
    /// namespace of the multi-region rehearsal.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<TestDns> {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(udp.local_addr()?).await?;
        Self::serve((udp, tcp))
    }

    fn serve((udp, tcp): (UdpSocket, TcpListener)) -> anyhow::Result<TestDns> {
        let zone = Arc::new(Mutex::new(Zone::default()));
        let mut server = Server::new(Handler { zone: zone.clone() });
        let addr = udp.local_addr()?;
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, TCP_BUFFER);
        tracing::debug!(%addr, "test DNS server started");
        Ok(TestDns { addr, zone, server })
    }

    /// The address (UDP and TCP) to send queries to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve `record` at `name`, in addition to what is already there.
    pub fn add(&self, name: &str, record: TestRecord) {
        self.zone()
            .records
            .entry(normalize(name))
            .or_default()
            .push(record);
    }

    /// Forget everything about `name`: records, SERVFAIL and silence.
    pub fn clear(&self, name: &str) {
        let name = normalize(name);
        let mut zone = self.zone();
        zone.records.remove(&name);
        zone.modes.remove(&name);
    }

    /// Answer every query for `name` with SERVFAIL.
    pub fn servfail(&self, name: &str) {
        self.zone().modes.insert(normalize(name), Mode::ServFail);
    }

    /// Never answer queries for `name` (clients time out).
    pub fn silent(&self, name: &str) {
        self.zone().modes.insert(normalize(name), Mode::Silent);
    }

    fn zone(&self) -> MutexGuard<'_, Zone> {
        lock(&self.zone)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        // Dropping `server` aborts its tasks; cancelling first lets them stop
        // cleanly if they are polled before the abort lands.
        self.server.shutdown_token().cancel();
    }
}

/// UDP and TCP sockets on the same ephemeral port of `127.0.0.1`.
async fn bind_pair() -> anyhow::Result<(UdpSocket, TcpListener)> {
    let mut last_error = None;
    for _ in 0..32 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) => last_error = Some(error),
        }
    }
    Err(anyhow::anyhow!(
        "no port free for both UDP and TCP: {last_error:?}"
    ))
}

fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn lock(zone: &Mutex<Zone>) -> MutexGuard<'_, Zone> {
    zone.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    ServFail,
    Silent,
}

#[derive(Default)]
struct Zone {
    records: HashMap<String, Vec<TestRecord>>,
    modes: HashMap<String, Mode>,
}

/// What to do with one query.
enum Reply {
    Silent,
    Answer(ResponseCode, Vec<Record>),
}

impl Zone {
    fn reply(&self, qname: &str, qtype: RecordType) -> Reply {
        match self.modes.get(qname) {
            Some(Mode::Silent) => return Reply::Silent,
            Some(Mode::ServFail) => return Reply::Answer(ResponseCode::ServFail, Vec::new()),
            None => {}
        }
        if !self.exists(qname) {
            return Reply::Answer(ResponseCode::NXDomain, Vec::new());
        }
        let mut answers = Vec::new();
        let mut owner = qname.to_owned();
        for _ in 0..MAX_CHASE {
            let records = self
                .records
                .get(&owner)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let cname = records.iter().find_map(|r| match r {
                TestRecord::Cname(target) => Some(normalize(target)),
                _ => None,
            });
            if let (Some(target), false) = (&cname, qtype == RecordType::CNAME) {
                answers.extend(to_record(&owner, &TestRecord::Cname(target.clone())));
                // Follow only through plain data; the client asks for the rest.
                if self.records.contains_key(target) && !self.modes.contains_key(target) {
                    owner = target.clone();
                    continue;
                }
                break;
            }
            answers.extend(
                records
                    .iter()
                    .filter(|r| record_type(r) == qtype)
                    .filter_map(|r| to_record(&owner, r)),
            );
            break;
        }
        Reply::Answer(ResponseCode::NoError, answers)
    }

    /// Whether `name` has records, or names below it (empty non-terminal).
    fn exists(&self, name: &str) -> bool {
        let suffix = format!(".{name}");
        self.records.iter().any(|(owner, records)| {
            !records.is_empty() && (owner == name || owner.ends_with(&suffix))
        })
    }
}

fn record_type(record: &TestRecord) -> RecordType {
    match record {
        TestRecord::A(_) => RecordType::A,
        TestRecord::Aaaa(_) => RecordType::AAAA,
        TestRecord::Cname(_) => RecordType::CNAME,
        TestRecord::Txt(_) => RecordType::TXT,
        TestRecord::Caa { .. } => RecordType::CAA,
    }
}

/// The wire record for `record` at `owner`; `None` if a name is invalid.
fn to_record(owner: &str, record: &TestRecord) -> Option<Record> {
    let data = match record {
        TestRecord::A(ip) => RData::A(A(*ip)),
        TestRecord::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        TestRecord::Cname(target) => RData::CNAME(CNAME(fqdn(target)?)),
        TestRecord::Txt(text) => RData::TXT(TXT::new(vec![text.clone()])),
        TestRecord::Caa { tag, value } => {
            let mut caa = CAA::new_issue(false, None, Vec::new());
            caa.tag = tag.clone();
            caa.value = value.as_bytes().to_vec();
            RData::CAA(caa)
        }
    };
    Some(Record::from_rdata(fqdn(owner)?, 0, data))
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.", normalize(name))).ok()
}

/// Answers queries from the shared [`Zone`].
struct Handler {
    zone: Arc<Mutex<Zone>>,
}

impl Handler {
    async fn respond<R: ResponseHandler>(&self, request: &Request, mut handle: R) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = true;
        let reply = match request.queries.queries().first() {
            Some(query) => {
                let qname = normalize(&query.name().to_string());
                lock(&self.zone).reply(&qname, query.query_type())
            }
            None => Reply::Answer(ResponseCode::FormErr, Vec::new()),
        };
        let (code, answers) = match reply {
            Reply::Silent => return header_only(metadata),
            Reply::Answer(code, answers) => (code, answers),
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
                tracing::warn!(%error, "test DNS server failed to send a response");
                metadata.response_code = ResponseCode::ServFail;
                header_only(metadata)
            }
        }
    }
}

fn header_only(metadata: Metadata) -> ResponseInfo {
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

// `RequestHandler` is declared with `#[async_trait]`; this is its expansion,
// written out so the tests crate needs no `async-trait` dependency.
impl RequestHandler for Handler {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        T: 'async_trait + Time,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.respond(request, response_handle))
    }
}
