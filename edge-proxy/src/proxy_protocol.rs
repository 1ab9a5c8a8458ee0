//! PROXY protocol v2 in front of the HTTP and HTTPS listeners, for an edge
//! behind a TCP proxy that speaks it (Fly.io's `proxy_proto` handler, an AWS
//! NLB, HAProxy). With `proxy_protocol = "v2"` every connection must start
//! with one v2 header; its source address becomes the connection's client
//! address (`X-Forwarded-For`, logs), exactly as if the client had
//! connected directly.
//!
//! Exactly the header's bytes are read (16 fixed bytes, then the length they
//! announce), so nothing after it has to be put back. A connection without a
//! header, with a garbled or oversized one, or one that does not finish its
//! header within [`READ_TIMEOUT`] is closed and counted in
//! `proxy_protocol_headers_total{outcome}`. The LOCAL command (the proxy's
//! own health checks) and address families without an IP address keep the
//! socket's peer address.
//!
//! Two hooks: [`ProxyHeaderFirst`] runs before the pre-TLS gate on the HTTPS
//! listener; [`ProxyHeaderApp`] wraps the proxy application for the plain
//! listener, where pingora has no pre-TLS hook.

use crate::state::Edge;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, IO, SocketDigest, Stream};
use pingora::server::ShutdownWatch;
use serde::Deserialize;
use std::net::SocketAddr;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest address block + TLVs accepted after the 16 fixed bytes. An IPv6
/// address block is 36 bytes; Fly and the cloud load balancers add a few
/// small TLVs. The protocol allows 65535; we do not buffer that much.
pub const MAX_PAYLOAD: usize = 1024;
/// A client that has not finished its header by then is dropped.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
const FIXED_LEN: usize = 16;

/// Whether the HTTP and HTTPS listeners expect a PROXY header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// Clients connect directly; no header.
    #[default]
    Off,
    /// Every connection starts with a PROXY protocol v2 header.
    V2,
}

/// What a valid header says about the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A proxied connection from this client.
    Client(SocketAddr),
    /// The LOCAL command: the proxy speaking for itself (a health check).
    Local,
    /// PROXY with no IP addresses (AF_UNSPEC or AF_UNIX).
    Unspecified,
}

impl Source {
    /// The metric label of an accepted header.
    pub fn outcome(&self) -> &'static str {
        match self {
            Source::Client(_) => "proxied",
            Source::Local => "local",
            Source::Unspecified => "unspecified",
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the connection does not start with a PROXY v2 signature")]
    Missing,
    #[error("malformed PROXY v2 header: {0}")]
    Malformed(String),
    #[error("PROXY v2 header announces {0} bytes after the fixed part, over {MAX_PAYLOAD}")]
    Oversized(usize),
    #[error("no complete PROXY v2 header within {READ_TIMEOUT:?}")]
    Timeout,
    #[error("the connection ended inside the PROXY v2 header")]
    Closed,
}

impl HeaderError {
    /// The metric label of a refusal.
    pub fn outcome(&self) -> &'static str {
        match self {
            HeaderError::Missing => "missing",
            HeaderError::Malformed(_) => "malformed",
            HeaderError::Oversized(_) => "oversized",
            HeaderError::Timeout => "timeout",
            HeaderError::Closed => "closed",
        }
    }
}

/// Reads one v2 header and nothing after it, within [`READ_TIMEOUT`].
pub async fn read_header<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
) -> Result<Source, HeaderError> {
    tokio::time::timeout(READ_TIMEOUT, read_exact_header(stream))
        .await
        .unwrap_or(Err(HeaderError::Timeout))
}

async fn read_exact_header<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
) -> Result<Source, HeaderError> {
    let mut header = vec![0u8; FIXED_LEN];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|_| HeaderError::Closed)?;
    if !header.starts_with(ppp::v2::PROTOCOL_PREFIX) {
        return Err(HeaderError::Missing);
    }
    let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
    if len > MAX_PAYLOAD {
        return Err(HeaderError::Oversized(len));
    }
    header.resize(FIXED_LEN + len, 0);
    stream
        .read_exact(&mut header[FIXED_LEN..])
        .await
        .map_err(|_| HeaderError::Closed)?;
    parse(&header)
}

/// Parses one complete v2 header (no bytes after it).
pub fn parse(header: &[u8]) -> Result<Source, HeaderError> {
    use ppp::v2::{Addresses, Command, Header};
    let header = Header::try_from(header).map_err(|e| HeaderError::Malformed(e.to_string()))?;
    Ok(match (header.command, header.addresses) {
        (Command::Local, _) => Source::Local,
        (Command::Proxy, Addresses::IPv4(a)) => {
            Source::Client(SocketAddr::from((a.source_address, a.source_port)))
        }
        (Command::Proxy, Addresses::IPv6(a)) => {
            Source::Client(SocketAddr::from((a.source_address, a.source_port)))
        }
        (Command::Proxy, Addresses::Unspecified | Addresses::Unix(_)) => Source::Unspecified,
    })
}

/// Reads the header from a fresh connection, counts the outcome and, for a
/// proxied client, makes its address the connection's peer address.
async fn accept<S>(edge: &Edge, stream: &mut S, fd: RawFd) -> Result<Source, HeaderError>
where
    S: AsyncRead + GetSocketDigest + Unpin + ?Sized,
{
    let result = read_header(stream).await;
    let outcome = match &result {
        Ok(source) => source.outcome(),
        Err(e) => e.outcome(),
    };
    edge.metrics
        .proxy_headers
        .with_label_values(&[outcome])
        .inc();
    match &result {
        Ok(Source::Client(addr)) => {
            let digest = SocketDigest::from_raw_fd(fd);
            let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(*addr)));
            stream.set_socket_digest(digest);
            tracing::debug!(client = %addr, "PROXY v2 header accepted");
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "connection refused: PROXY v2 header"),
    }
    result
}

/// The HTTPS listener's pre-TLS hook: the header first, then `then` (the
/// ClientHello gate) on the bytes after it.
pub struct ProxyHeaderFirst<P> {
    pub edge: Arc<Edge>,
    pub then: P,
}

#[async_trait]
impl<P: PreTlsProcess> PreTlsProcess for ProxyHeaderFirst<P> {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let fd = stream.as_raw_fd();
        if let Err(e) = accept(&self.edge, stream, fd).await {
            return pingora::Error::e_explain(pingora::ErrorType::AcceptError, e.to_string());
        }
        self.then.process(stream).await
    }
}

/// The proxy application, with a header read first on plain connections
/// when `mode` is v2. TLS connections had theirs read by
/// [`ProxyHeaderFirst`]. Reused (keep-alive) connections are handed back to
/// the inner application here rather than to pingora's service, so a
/// connection's header is read exactly once.
pub struct ProxyHeaderApp<A> {
    pub edge: Arc<Edge>,
    pub mode: ProxyProtocol,
    pub inner: Arc<A>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ProxyHeaderApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if self.mode == ProxyProtocol::Off {
            return self.inner.process_new(stream, shutdown).await;
        }
        if stream.get_ssl_digest().is_none() {
            let io: &dyn IO = &*stream;
            // Plain listeners hand out L4 streams; anything else has no
            // socket to attribute, so it is refused rather than misattributed.
            let fd = io.as_any().downcast_ref::<L4Stream>()?.as_raw_fd();
            accept(&self.edge, &mut *stream, fd).await.ok()?;
        }
        let mut next = self.inner.process_new(stream, shutdown).await;
        while let Some(reused) = next {
            next = self.inner.process_new(reused, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Command, Protocol, Version};

    fn v2(command: Command, addresses: impl Into<ppp::v2::Addresses>) -> Vec<u8> {
        Builder::with_addresses(Version::Two | command, Protocol::Stream, addresses)
            .build()
            .unwrap()
    }

    async fn read(bytes: &[u8]) -> Result<Source, HeaderError> {
        let mut input = bytes;
        read_header(&mut input).await
    }

    #[tokio::test]
    async fn ipv4_and_ipv6_sources_become_the_client() {
        let h = v2(
            Command::Proxy,
            ppp::v2::IPv4::new([203, 0, 113, 7], [10, 0, 0, 1], 40_000, 443),
        );
        let addr: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        assert_eq!(read(&h).await, Ok(Source::Client(addr)));
        let h = v2(
            Command::Proxy,
            ppp::v2::IPv6::new(
                "2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap(),
                "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap(),
                5,
                80,
            ),
        );
        let addr: SocketAddr = "[2001:db8::7]:5".parse().unwrap();
        assert_eq!(read(&h).await, Ok(Source::Client(addr)));
    }

    #[tokio::test]
    async fn local_and_unspecified_keep_the_socket_address() {
        let h = v2(Command::Local, ppp::v2::Addresses::Unspecified);
        assert_eq!(read(&h).await, Ok(Source::Local));
        let h = v2(Command::Proxy, ppp::v2::Addresses::Unspecified);
        assert_eq!(read(&h).await, Ok(Source::Unspecified));
    }

    #[tokio::test]
    async fn only_the_header_is_consumed() {
        let mut bytes = v2(
            Command::Proxy,
            ppp::v2::IPv4::new([192, 0, 2, 1], [192, 0, 2, 2], 1, 2),
        );
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut input = &bytes[..];
        assert!(matches!(
            read_header(&mut input).await,
            Ok(Source::Client(_))
        ));
        assert_eq!(input, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn hostile_input_is_refused() {
        assert_eq!(
            read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await,
            Err(HeaderError::Missing)
        );
        // PROXY v1 is a different protocol.
        assert_eq!(
            read(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n").await,
            Err(HeaderError::Missing)
        );
        let good = v2(
            Command::Proxy,
            ppp::v2::IPv4::new([192, 0, 2, 1], [192, 0, 2, 2], 1, 2),
        );
        // Cut short: the stream ends inside the header.
        assert_eq!(read(&good[..10]).await, Err(HeaderError::Closed));
        assert_eq!(read(&good[..20]).await, Err(HeaderError::Closed));
        // Version 1 in the binary format, an unknown command, a bad family.
        for (i, byte) in [(12, 0x11), (12, 0x2F), (13, 0x41)] {
            let mut bad = good.clone();
            bad[i] = byte;
            assert!(
                matches!(read(&bad).await, Err(HeaderError::Malformed(_))),
                "byte {i} = {byte:#x}"
            );
        }
        // A length too short for the IPv4 addresses it claims.
        let mut short = good[..16].to_vec();
        short[15] = 4;
        short.extend_from_slice(&[0; 4]);
        assert!(matches!(read(&short).await, Err(HeaderError::Malformed(_))));
        let mut huge = good[..16].to_vec();
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            read(&huge).await,
            Err(HeaderError::Oversized(usize::from(u16::MAX)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_header_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, &ppp::v2::PROTOCOL_PREFIX[..8])
            .await
            .unwrap();
        assert_eq!(read_header(&mut server).await, Err(HeaderError::Timeout));
        drop(client);
    }

    proptest::proptest! {
        /// Hostile input: any bytes, and any bytes after a valid signature
        /// and version, never panic and never make the reader take more
        /// than one bounded header.
        #[test]
        fn arbitrary_bytes_are_refused_or_parsed_never_panic(
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            signed in proptest::bool::ANY,
        ) {
            let mut bytes = Vec::new();
            if signed {
                bytes.extend_from_slice(ppp::v2::PROTOCOL_PREFIX);
                bytes.push(0x21);
            }
            bytes.extend_from_slice(&tail);
            let _ = parse(&bytes);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let mut input = &bytes[..];
            let result = runtime.block_on(read_header(&mut input));
            let consumed = bytes.len() - input.len();
            proptest::prop_assert!(consumed <= FIXED_LEN + MAX_PAYLOAD);
            if result.is_ok() {
                let len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
                proptest::prop_assert_eq!(consumed, FIXED_LEN + len);
            }
        }
    }

    #[test]
    fn no_prefix_of_arbitrary_bytes_panics() {
        // Every truncation and every single-byte change of a valid header.
        let good = v2(
            Command::Proxy,
            ppp::v2::IPv6::new(
                "2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap(),
                "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap(),
                5,
                80,
            ),
        );
        for len in 0..=good.len() {
            let _ = parse(&good[..len]);
        }
        for i in 0..good.len() {
            for b in [0u8, 0x01, 0x20, 0x7F, 0xFF] {
                let mut bad = good.clone();
                bad[i] = b;
                let _ = parse(&bad);
            }
        }
    }
}
