//! Where on-demand certificates come from: the [`CertificateSource`] trait
//! (injected, so tests control it) and its HTTP implementation, which POSTs
//! a `CertificateRequest` (`{"hostname": "..."}`) to a URL — the control
//! plane's `/internal/v1/edge/certificates/request` with the edge's bearer
//! token, or an explicit `certificate_source` — and expects a
//! `CertificateBundle` (200), a refusal (403/404/422), or "no issuer /
//! issuance failed" (503). Anything but a bundle fails that one handshake.

use crate::config::Token;
use async_trait::async_trait;
use portico_protocol::{CertificateBundle, CertificateRequest, ChallengeAnswer, ChallengeId};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the certificate source refused {0}")]
    Refused(String),
    #[error("certificate source: {0}")]
    Failed(String),
}

#[async_trait]
pub trait CertificateSource: Send + Sync {
    async fn request(&self, hostname: &str) -> Result<CertificateBundle, SourceError>;

    /// One ACME challenge answer the edge's table lacks (its config stream
    /// lags); `Ok(None)` when the source has none, or cannot tell.
    async fn challenge(&self, _id: &ChallengeId) -> Result<Option<ChallengeAnswer>, SourceError> {
        Ok(None)
    }
}

pub struct HttpSource {
    url: String,
    /// `…/internal/v1/edge/challenges`; `None`: challenges are not fetched.
    challenges: Option<reqwest::Url>,
    token: Option<Token>,
    client: reqwest::Client,
}

impl HttpSource {
    /// A source POSTing to `url`, sending `token` as a bearer token if set.
    pub fn new(
        url: &str,
        timeout: Duration,
        token: Option<Token>,
        tls: &rustls::ClientConfig,
    ) -> anyhow::Result<Self> {
        let client = crate::outbound::builder(tls).timeout(timeout).build()?;
        Ok(HttpSource {
            url: url.to_string(),
            challenges: None,
            token,
            client,
        })
    }

    /// Also fetch challenge answers, from `{base}/{http-01|tls-alpn-01}/{key}`.
    pub fn with_challenges(mut self, base: &str) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(base)?;
        anyhow::ensure!(!url.cannot_be_a_base(), "{base} cannot be a base URL");
        self.challenges = Some(url);
        Ok(self)
    }

    /// Sends with the token, if any; a transport failure is described.
    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SourceError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        request
            .send()
            .await
            .map_err(|e| SourceError::Failed(crate::outbound::describe(&e)))
    }

    fn challenge_url(&self, id: &ChallengeId) -> Option<reqwest::Url> {
        let (kind, key) = match id {
            ChallengeId::Http01 { token } => ("http-01", token.as_str()),
            ChallengeId::TlsAlpn01 { hostname } => ("tls-alpn-01", hostname.as_str()),
            ChallengeId::Unknown => return None,
        };
        let mut url = self.challenges.clone()?;
        // Segments are percent-encoded: a key cannot leave its path segment.
        url.path_segments_mut()
            .ok()?
            .pop_if_empty()
            .push(kind)
            .push(key);
        Some(url)
    }
}

#[async_trait]
impl CertificateSource for HttpSource {
    async fn request(&self, hostname: &str) -> Result<CertificateBundle, SourceError> {
        let request = self.client.post(&self.url).json(&CertificateRequest {
            hostname: hostname.to_owned(),
        });
        let resp = self.send(request).await?;
        match resp.status().as_u16() {
            200 => resp
                .json()
                .await
                .map_err(|e| SourceError::Failed(format!("bad bundle: {e}"))),
            403 | 404 | 422 => Err(SourceError::Refused(hostname.to_string())),
            other => Err(SourceError::Failed(failure(other, hostname))),
        }
    }

    async fn challenge(&self, id: &ChallengeId) -> Result<Option<ChallengeAnswer>, SourceError> {
        let Some(url) = self.challenge_url(id) else {
            return Ok(None);
        };
        let resp = self.send(self.client.get(url)).await?;
        match resp.status().as_u16() {
            200 => resp
                .json()
                .await
                .map(Some)
                .map_err(|e| SourceError::Failed(format!("bad challenge answer: {e}"))),
            404 => Ok(None),
            other => Err(SourceError::Failed(format!(
                "status {other} fetching challenge {id:?}"
            ))),
        }
    }
}

/// What a non-bundle, non-refusal status means, in words.
fn failure(status: u16, hostname: &str) -> String {
    match status {
        401 => "the control plane refused the edge's token (401); check token".to_owned(),
        503 => format!(
            "no certificate for {hostname}: the control plane has no issuer configured \
             or issuance failed (503)"
        ),
        other => format!("status {other} for {hostname}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{HttpSource, failure};
    use portico_protocol::ChallengeId;

    #[test]
    fn challenge_keys_stay_in_their_path_segment() {
        let tls = crate::outbound::tls_config(&crate::outbound::Trust::for_urls(
            ["http://127.0.0.1:1"],
            None,
        ))
        .unwrap();
        let source = HttpSource::new(
            "http://127.0.0.1:1/c",
            std::time::Duration::from_secs(1),
            None,
            &tls,
        )
        .unwrap()
        .with_challenges("http://127.0.0.1:1/internal/v1/edge/challenges/")
        .unwrap();
        let url = |id| source.challenge_url(&id).unwrap().to_string();
        assert_eq!(
            url(ChallengeId::Http01 {
                token: "abc_-1".into()
            }),
            "http://127.0.0.1:1/internal/v1/edge/challenges/http-01/abc_-1"
        );
        assert_eq!(
            url(ChallengeId::TlsAlpn01 {
                hostname: "../../x?y#z".into()
            }),
            "http://127.0.0.1:1/internal/v1/edge/challenges/tls-alpn-01/..%2F..%2Fx%3Fy%23z"
        );
        assert!(source.challenge_url(&ChallengeId::Unknown).is_none());
    }

    #[test]
    fn failures_say_what_went_wrong() {
        assert!(failure(503, "a.example.com").contains("no issuer"));
        assert!(failure(503, "a.example.com").contains("a.example.com"));
        assert!(failure(401, "a.example.com").contains("token"));
        assert_eq!(
            failure(500, "a.example.com"),
            "status 500 for a.example.com"
        );
    }
}
