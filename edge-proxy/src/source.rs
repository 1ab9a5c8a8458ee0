//! Where on-demand certificates come from: the [`CertificateSource`] trait
//! (injected, so tests control it) and its HTTP implementation, which POSTs
//! `{"hostname": "..."}` to a URL and expects a `CertificateBundle` (200) or
//! a refusal (403/404/422). The control plane implements the URL later; a
//! test server does today.

use async_trait::async_trait;
use portico_protocol::CertificateBundle;
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
    client: reqwest::Client,
}

impl HttpSource {
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(HttpSource {
            url: url.to_string(),
            client,
        })
    }
}

#[async_trait]
impl CertificateSource for HttpSource {
    async fn request(&self, hostname: &str) -> Result<CertificateBundle, SourceError> {
        let resp = self
            .client
            .post(&self.url)
            .json(&serde_json::json!({ "hostname": hostname }))
            .send()
            .await
            .map_err(|e| SourceError::Failed(e.to_string()))?;
        match resp.status().as_u16() {
            200 => resp
                .json()
                .await
                .map_err(|e| SourceError::Failed(format!("bad bundle: {e}"))),
            403 | 404 | 422 => Err(SourceError::Refused(hostname.to_string())),
            other => Err(SourceError::Failed(format!("status {other}"))),
        }
    }
}
