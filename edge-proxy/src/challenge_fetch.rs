//! Challenge answers for an edge whose config stream lags: when the CA asks
//! for an HTTP-01 token, or opens an `acme-tls/1` handshake, that the table
//! does not hold yet, the edge asks the control plane for that one answer.
//!
//! The table stays the first and usual place (the control plane waits for
//! every healthy edge to acknowledge an answer before the CA validates);
//! this is the bounded fallback for an edge that did not:
//! - one request per answer at a time (single flight, shared by concurrent
//!   validators);
//! - answers, and misses, are remembered for a short while, so a validator
//!   retrying, or a scanner repeating a token, costs no more requests;
//! - at most [`MAX_IN_FLIGHT`] requests at once and [`BURST`] per
//!   [`REFILL`] window: over that a miss is answered at once without asking,
//!   so unknown tokens can never turn into a flood at the control plane;
//! - TLS-ALPN-01 is fetched only for hosts the table knows (the caller
//!   checks), HTTP-01 only for well-formed tokens (the router checks).

use crate::source::CertificateSource;
use crate::state::Edge;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use portico_protocol::{ChallengeAnswer, ChallengeId};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long a fetched answer is served from memory.
const FOUND_TTL: Duration = Duration::from_secs(30);
/// How long a miss is remembered.
const MISS_TTL: Duration = Duration::from_secs(5);
/// The longest a validator's request waits for the control plane.
const FETCH_WAIT: Duration = Duration::from_secs(5);
/// Requests to the control plane at once.
pub const MAX_IN_FLIGHT: usize = 16;
/// Requests allowed per refill window (a token bucket of this size).
pub const BURST: u32 = 64;
/// The bucket refills completely once per window.
pub const REFILL: Duration = Duration::from_secs(10);
/// Remembered answers and misses at most; older ones are dropped first.
const MAX_REMEMBERED: usize = 4096;

/// A fetched answer, ready to serve.
#[derive(Clone)]
pub enum Fetched {
    Http01(Arc<str>),
    TlsAlpn01(Arc<CertifiedKey>),
}

type Flight = Shared<BoxFuture<'static, Option<Fetched>>>;

pub struct ChallengeFetch {
    source: Option<Arc<dyn CertificateSource>>,
    inflight: Mutex<HashMap<String, Flight>>,
    remembered: Mutex<HashMap<String, (Instant, Option<Fetched>)>>,
    permits: Arc<Semaphore>,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: u32,
    refilled: Instant,
}

impl ChallengeFetch {
    /// `None`: the edge has no control plane to ask; every miss stays one.
    pub fn new(source: Option<Arc<dyn CertificateSource>>) -> Self {
        ChallengeFetch {
            source,
            inflight: Mutex::new(HashMap::new()),
            remembered: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            bucket: Mutex::new(Bucket {
                tokens: BURST,
                refilled: Instant::now(),
            }),
        }
    }

    /// The key authorization for an HTTP-01 `token` the table lacks.
    pub async fn http01(&self, edge: &Edge, token: &str) -> Option<Arc<str>> {
        let id = ChallengeId::Http01 {
            token: token.to_owned(),
        };
        match self.fetch(edge, id).await? {
            Fetched::Http01(key_authorization) => Some(key_authorization),
            Fetched::TlsAlpn01(_) => None,
        }
    }

    /// The challenge certificate for an `acme-tls/1` handshake to `host`.
    pub async fn tls_alpn01(&self, edge: &Edge, host: &str) -> Option<Arc<CertifiedKey>> {
        let id = ChallengeId::TlsAlpn01 {
            hostname: host.to_owned(),
        };
        match self.fetch(edge, id).await? {
            Fetched::TlsAlpn01(key) => Some(key),
            Fetched::Http01(_) => None,
        }
    }

    async fn fetch(&self, edge: &Edge, id: ChallengeId) -> Option<Fetched> {
        let Some(source) = self.source.clone() else {
            return self.record(edge, "no_source", None);
        };
        let key = cache_key(&id);
        if let Some(found) = self.recall(&key) {
            let outcome = if found.is_some() {
                "cached"
            } else {
                "cached_miss"
            };
            return self.record(edge, outcome, found);
        }
        let (flight, leader) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            match inflight.get(&key) {
                Some(flight) => (flight.clone(), false),
                None => {
                    if !self.take_token() {
                        return self.record(edge, "limited", None);
                    }
                    let flight = spawn_fetch(source, self.permits.clone(), id).shared();
                    inflight.insert(key.clone(), flight.clone());
                    (flight, true)
                }
            }
        };
        let found = tokio::time::timeout(FETCH_WAIT, flight)
            .await
            .unwrap_or(None);
        if leader {
            self.inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            self.remember(key, found.clone());
        }
        let outcome = if found.is_some() { "found" } else { "missing" };
        self.record(edge, outcome, found)
    }

    fn recall(&self, key: &str) -> Option<Option<Fetched>> {
        let remembered = self
            .remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (at, found) = remembered.get(key)?;
        fresh(*at, found).then(|| found.clone())
    }

    fn remember(&self, key: String, found: Option<Fetched>) {
        let mut remembered = self
            .remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if remembered.len() >= MAX_REMEMBERED {
            remembered.retain(|_, (at, found)| fresh(*at, found));
        }
        if remembered.len() >= MAX_REMEMBERED {
            // Still full of live entries: forget the oldest one.
            if let Some(oldest) = remembered
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
            {
                remembered.remove(&oldest);
            }
        }
        remembered.insert(key, (Instant::now(), found));
    }

    fn take_token(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        if bucket.refilled.elapsed() >= REFILL {
            bucket.tokens = BURST;
            bucket.refilled = Instant::now();
        }
        if bucket.tokens == 0 {
            return false;
        }
        bucket.tokens -= 1;
        true
    }

    fn record(
        &self,
        edge: &Edge,
        outcome: &'static str,
        found: Option<Fetched>,
    ) -> Option<Fetched> {
        edge.metrics
            .challenge_fetches
            .with_label_values(&[outcome])
            .inc();
        found
    }
}

/// Whether a remembered answer (or miss) from `at` may still be used.
fn fresh(at: Instant, found: &Option<Fetched>) -> bool {
    at.elapsed() < if found.is_some() { FOUND_TTL } else { MISS_TTL }
}

fn cache_key(id: &ChallengeId) -> String {
    match id {
        ChallengeId::Http01 { token } => format!("http01:{token}"),
        ChallengeId::TlsAlpn01 { hostname } => format!("tls_alpn01:{hostname}"),
        ChallengeId::Unknown => String::new(),
    }
}

/// The request runs in its own task (bounded by `permits`), so a validator
/// that gives up does not cancel it for the others.
fn spawn_fetch(
    source: Arc<dyn CertificateSource>,
    permits: Arc<Semaphore>,
    id: ChallengeId,
) -> BoxFuture<'static, Option<Fetched>> {
    let task = tokio::spawn(async move {
        let _permit = permits.acquire_owned().await.ok()?;
        match source.challenge(&id).await {
            Ok(Some(answer)) => usable(&id, answer),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(challenge = ?id, error = %e, "fetching a challenge answer failed");
                None
            }
        }
    });
    async move { task.await.ok().flatten() }.boxed()
}

/// The answer, if it is the one asked for and well-formed.
fn usable(id: &ChallengeId, answer: ChallengeAnswer) -> Option<Fetched> {
    match (id, answer) {
        (
            ChallengeId::Http01 { token },
            ChallengeAnswer::Http01 {
                token: got,
                key_authorization,
            },
        ) if *token == got
            && key_authorization
                .strip_prefix(token.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
            && crate::table::valid_key_authorization(&key_authorization) =>
        {
            Some(Fetched::Http01(key_authorization.into()))
        }
        (
            ChallengeId::TlsAlpn01 { hostname },
            ChallengeAnswer::TlsAlpn01 {
                hostname: got,
                certificate_pem,
                key_pem,
            },
        ) if *hostname == got => match crate::table::challenge_key(&certificate_pem, &key_pem) {
            Ok(key) => Some(Fetched::TlsAlpn01(key)),
            Err(e) => {
                tracing::warn!(host = %hostname, error = %e, "fetched TLS-ALPN-01 answer is unusable");
                None
            }
        },
        (id, _) => {
            tracing::warn!(challenge = ?id, "the control plane answered another challenge");
            None
        }
    }
}

#[cfg(test)]
#[path = "challenge_fetch_tests.rs"]
mod tests;
