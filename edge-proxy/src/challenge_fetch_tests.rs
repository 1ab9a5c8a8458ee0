//! The fallback fetch against a counting source: single flight, memory of
//! answers and misses, the request bound, and answers that do not fit.

use super::*;
use crate::metrics::Metrics;
use crate::source::SourceError;
use crate::store::SnapshotStore;
use async_trait::async_trait;
use portico_protocol::CertificateBundle;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Knows one HTTP-01 token and one TLS-ALPN-01 host; counts every call and
/// answers after `delay`, so concurrent callers overlap.
struct Counting {
    calls: AtomicUsize,
    delay: Duration,
    answer_for_other_token: bool,
    tls_alpn: Option<(String, String)>,
}

impl Counting {
    fn new() -> Self {
        Counting {
            calls: AtomicUsize::new(0),
            delay: Duration::from_millis(50),
            answer_for_other_token: false,
            tls_alpn: None,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl CertificateSource for Counting {
    async fn request(&self, hostname: &str) -> Result<CertificateBundle, SourceError> {
        Err(SourceError::Refused(hostname.into()))
    }

    async fn challenge(&self, id: &ChallengeId) -> Result<Option<ChallengeAnswer>, SourceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        Ok(match id {
            ChallengeId::Http01 { token } if token == "known" => Some(ChallengeAnswer::Http01 {
                token: if self.answer_for_other_token {
                    "other".into()
                } else {
                    token.clone()
                },
                key_authorization: format!("{token}.thumbprint"),
            }),
            ChallengeId::TlsAlpn01 { hostname } if hostname == "a.example.com" => self
                .tls_alpn
                .clone()
                .map(|(certificate_pem, key_pem)| ChallengeAnswer::TlsAlpn01 {
                    hostname: hostname.clone(),
                    certificate_pem,
                    key_pem,
                }),
            _ => None,
        })
    }
}

fn edge() -> (Edge, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "portico-challenge-fetch-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let edge = Edge::new(Metrics::new().unwrap(), SnapshotStore::open(&dir).unwrap());
    (edge, dir)
}

fn outcomes(edge: &Edge, outcome: &str) -> u64 {
    edge.metrics
        .challenge_fetches
        .with_label_values(&[outcome])
        .get()
}

#[tokio::test]
async fn concurrent_validators_share_one_request_and_later_ones_none() {
    let (edge, dir) = edge();
    let source = Arc::new(Counting::new());
    let fetch = ChallengeFetch::new(Some(source.clone()));
    let answers = futures::future::join_all((0..20).map(|_| fetch.http01(&edge, "known"))).await;
    for answer in &answers {
        assert_eq!(answer.as_deref(), Some("known.thumbprint"));
    }
    assert_eq!(source.calls(), 1, "one request for 20 validators");
    assert_eq!(
        fetch.http01(&edge, "known").await.as_deref(),
        Some("known.thumbprint")
    );
    assert_eq!(source.calls(), 1, "then served from memory");
    assert_eq!(outcomes(&edge, "cached"), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn misses_are_remembered_and_unknown_tokens_are_bounded() {
    let (edge, dir) = edge();
    let source = Arc::new(Counting {
        delay: Duration::ZERO,
        ..Counting::new()
    });
    let fetch = ChallengeFetch::new(Some(source.clone()));
    assert!(fetch.http01(&edge, "nobody").await.is_none());
    assert!(fetch.http01(&edge, "nobody").await.is_none());
    assert_eq!(source.calls(), 1, "a miss is remembered");
    assert_eq!(outcomes(&edge, "cached_miss"), 1);

    // A scanner's distinct tokens: no more requests than the bucket holds
    // (the refill window is far longer than this loop).
    for i in 0..(BURST as usize * 3) {
        assert!(fetch.http01(&edge, &format!("scan{i}")).await.is_none());
    }
    assert!(
        source.calls() <= BURST as usize,
        "{} requests for {} unknown tokens",
        source.calls(),
        BURST * 3
    );
    assert!(outcomes(&edge, "limited") >= u64::from(BURST) * 2 - 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_answer_for_another_challenge_is_not_served() {
    let (edge, dir) = edge();
    let source = Arc::new(Counting {
        answer_for_other_token: true,
        ..Counting::new()
    });
    let fetch = ChallengeFetch::new(Some(source.clone()));
    assert!(fetch.http01(&edge, "known").await.is_none());
    // A TLS-ALPN-01 answer that is not a certificate is refused too.
    let source = Arc::new(Counting {
        tls_alpn: Some(("not a pem".into(), "nor this".into())),
        ..Counting::new()
    });
    let fetch = ChallengeFetch::new(Some(source));
    assert!(fetch.tls_alpn01(&edge, "a.example.com").await.is_none());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn tls_alpn_answers_become_certified_keys() {
    let (edge, dir) = edge();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["a.example.com".to_string()]).unwrap();
    let source = Arc::new(Counting {
        tls_alpn: Some((cert.pem(), signing_key.serialize_pem())),
        ..Counting::new()
    });
    let fetch = ChallengeFetch::new(Some(source.clone()));
    let key = fetch.tls_alpn01(&edge, "a.example.com").await.unwrap();
    assert_eq!(key.cert[0].as_ref(), cert.der().as_ref());
    assert!(fetch.tls_alpn01(&edge, "b.example.com").await.is_none());
    assert_eq!(source.calls(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn without_a_source_nothing_is_asked() {
    let (edge, dir) = edge();
    let fetch = ChallengeFetch::new(None);
    assert!(fetch.http01(&edge, "known").await.is_none());
    assert_eq!(outcomes(&edge, "no_source"), 1);
    let _ = std::fs::remove_dir_all(dir);
}
