//! Where on-demand certificates come from: the [`CertificateSource`] trait
//! (injected, so tests control it) and its HTTP implementation, which POSTs
//! a `CertificateRequest` (`{"hostname": "..."}`) to a URL — the control
//! plane's `/internal/v1/edge/certificates/request` with the edge's bearer
//! token, or an explicit `certificate_source` — and expects a
//! `CertificateBundle` (200), a refusal (403/404/422), or "no issuer /
//! issuance failed" (503). Anything but a bundle fails that one handshake.

use crate::config::Token;
use async_trait::async_trait;
use portico_protocol::{CertificateBundle, CertificateRequest};
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
}

pub struct HttpSource {
    url: String,
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
            token,
            client,
        })
    }
}

#[async_trait]
impl CertificateSource for HttpSource {
    async fn request(&self, hostname: &str) -> Result<CertificateBundle, SourceError> {
        let mut request = self.client.post(&self.url).json(&CertificateRequest {
            hostname: hostname.to_owned(),
        });
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let resp = request
            .send()
            .await
            .map_err(|e| SourceError::Failed(crate::outbound::describe(&e)))?;
        match resp.status().as_u16() {
            200 => resp
                .json()
                .await
                .map_err(|e| SourceError::Failed(format!("bad bundle: {e}"))),
            403 | 404 | 422 => Err(SourceError::Refused(hostname.to_string())),
            other => Err(SourceError::Failed(failure(other, hostname))),
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
    use super::failure;

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
