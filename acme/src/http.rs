//! The HTTP client that talks to the CA: rustls with ring only (built with an
//! explicit provider, never the process default), the platform's roots plus an
//! optional extra root, one deadline per request, a cap on response size, and
//! a note of the last response's status and `Retry-After` so that errors can
//! be classified (instant-acme keeps only the problem body).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::Request;
use http::header::RETRY_AFTER;
use http_body_util::{BodyExt, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::Error;

/// No ACME response is anywhere near this; a bigger one is refused.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Status and `Retry-After` of the last response seen in this task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ResponseMeta {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
}

tokio::task_local! {
    static LAST_RESPONSE: Cell<Option<ResponseMeta>>;
}

/// Run `work` with its own record of the last CA response, so that
/// concurrent issuances sharing one client never see each other's.
pub(crate) async fn scoped<F: Future>(work: F) -> F::Output {
    LAST_RESPONSE.scope(Cell::new(None), work).await
}

/// The last response seen inside the current [`scoped`] call.
pub(crate) fn last_response() -> Option<ResponseMeta> {
    LAST_RESPONSE.try_with(Cell::get).ok().flatten()
}

fn note_response(meta: Option<ResponseMeta>) {
    // Outside `scoped` there is nothing to record into; that is fine.
    let _ = LAST_RESPONSE.try_with(|cell| cell.set(meta));
}

/// A request that got no complete answer within the deadline.
#[derive(Debug, thiserror::Error)]
#[error("no answer from the CA within {0:?}")]
pub(crate) struct RequestTimedOut(pub(crate) Duration);

/// The client handed to instant-acme.
pub(crate) struct CaClient {
    inner: Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    timeout: Duration,
}

impl CaClient {
    /// HTTPS only, trusting the platform roots and `extra_root_pem`.
    pub(crate) fn new(extra_root_pem: Option<&str>, timeout: Duration) -> Result<Self, Error> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(extra_root_pem)?)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self {
            inner: Client::builder(TokioExecutor::new()).build(https),
            timeout,
        })
    }
}

impl HttpClient for CaClient {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        note_response(None);
        let response = self.inner.request(req);
        let timeout = self.timeout;
        Box::pin(async move {
            let exchange = async {
                let rsp = response
                    .await
                    .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
                let (parts, body) = rsp.into_parts();
                let body = Limited::new(body, MAX_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map_err(instant_acme::Error::Other)?
                    .to_bytes();
                Ok::<_, instant_acme::Error>((parts, body))
            };
            let (parts, body) = tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| instant_acme::Error::Other(Box::new(RequestTimedOut(timeout))))??;
            let retry_after = parts
                .headers
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, SystemTime::now()));
            note_response(Some(ResponseMeta {
                status: parts.status.as_u16(),
                retry_after,
            }));
            Ok(BytesResponse {
                parts,
                body: Box::new(body),
            })
        })
    }
}

fn tls_config(extra_root_pem: Option<&str>) -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra_roots = match extra_root_pem {
        None => Vec::new(),
        Some(pem) => parse_roots(pem)?,
    };
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
            .map_err(|e| Error::Config(format!("loading trusted roots: {e}")))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS versions: {e}")))?
        .dangerous() // Not dangerous: the platform verifier, with extra roots.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

fn parse_roots(pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let roots = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("the extra root is not PEM: {e}")))?;
    if roots.is_empty() {
        return Err(Error::Config(
            "the extra root PEM holds no certificate".into(),
        ));
    }
    Ok(roots)
}

/// `Retry-After` is either delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::from(at.with_timezone(&Utc));
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_799 - 60);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 1999 23:59:59 GMT", now),
            Some(Duration::from_secs(60))
        );
        let later = now + Duration::from_secs(3600);
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 1999 23:59:59 GMT", later),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn extra_roots_must_be_certificates() {
        assert!(matches!(parse_roots(""), Err(Error::Config(_))));
        assert!(matches!(parse_roots("not pem"), Err(Error::Config(_))));
    }

    #[tokio::test]
    async fn last_response_is_per_scope() {
        assert_eq!(last_response(), None);
        let meta = ResponseMeta {
            status: 429,
            retry_after: Some(Duration::from_secs(3)),
        };
        let seen = scoped(async move {
            note_response(Some(meta));
            last_response()
        })
        .await;
        assert_eq!(seen, Some(meta));
        assert_eq!(scoped(async { last_response() }).await, None);
    }
}
