//! On-demand certificates: the first handshake for a known host that allows
//! on-demand TLS asks the [`CertificateSource`] once — concurrent handshakes
//! for the same host share that one request (single flight) — and waits up to
//! a bound. A failed request is not repeated for a while (negative cache), so
//! a burst of handshakes cannot turn into a burst of orders.

use crate::source::{CertificateSource, SourceError};
use crate::state::Edge;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

pub struct OnDemand {
    source: Option<Arc<dyn CertificateSource>>,
    wait: Duration,
    inflight: Mutex<HashMap<String, Shared<BoxFuture<'static, &'static str>>>>,
    failed: Mutex<HashMap<String, Instant>>,
}

impl OnDemand {
    pub fn new(source: Option<Arc<dyn CertificateSource>>, wait: Duration) -> Self {
        OnDemand {
            source,
            wait,
            inflight: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// Makes sure a certificate for `host` is being obtained and waits for
    /// it, at most the configured bound. Returns the outcome for metrics.
    pub async fn ensure(&self, edge: &Arc<Edge>, host: &str) -> &'static str {
        let Some(source) = self.source.clone() else {
            return self.record(edge, "no_source");
        };
        if self.recently_failed(host) {
            return self.record(edge, "backoff");
        }
        let (flight, shared) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            match inflight.get(host) {
                Some(f) => (f.clone(), true),
                None => {
                    let f = spawn_request(source, edge.clone(), host.to_string()).shared();
                    inflight.insert(host.to_string(), f.clone());
                    (f, false)
                }
            }
        };
        let outcome = tokio::time::timeout(self.wait, flight)
            .await
            .unwrap_or("timeout");
        if !shared {
            self.inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(host);
            if outcome != "issued" {
                self.failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(host.to_string(), Instant::now());
            }
        }
        self.record(
            edge,
            if shared && outcome == "issued" {
                "shared"
            } else {
                outcome
            },
        )
    }

    fn recently_failed(&self, host: &str) -> bool {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        failed.retain(|_, at| at.elapsed() < RETRY_AFTER_FAILURE);
        failed.contains_key(host)
    }

    fn record(&self, edge: &Edge, outcome: &'static str) -> &'static str {
        edge.metrics.on_demand.with_label_values(&[outcome]).inc();
        outcome
    }
}

/// The request runs in its own task, so it completes (and the certificate is
/// installed) even when the handshake that started it gives up waiting.
fn spawn_request(
    source: Arc<dyn CertificateSource>,
    edge: Arc<Edge>,
    host: String,
) -> BoxFuture<'static, &'static str> {
    let task = tokio::spawn(async move {
        match source.request(&host).await {
            Ok(bundle) => match edge.add_certificate(&bundle) {
                Ok(()) => {
                    tracing::info!(host, "on-demand certificate installed");
                    "issued"
                }
                Err(e) => {
                    tracing::warn!(host, error = %e, "on-demand certificate rejected");
                    "error"
                }
            },
            Err(SourceError::Refused(_)) => "refused",
            Err(e) => {
                tracing::warn!(host, error = %e, "on-demand certificate request failed");
                "error"
            }
        }
    });
    async move { task.await.unwrap_or("error") }.boxed()
}
