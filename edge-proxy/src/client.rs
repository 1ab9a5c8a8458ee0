//! The config-stream client: a pingora background service that keeps the
//! edge's table in step with the control plane, and tells the control plane
//! what the edge serves.
//!
//! Four loops run side by side until shutdown:
//!
//! - **stream** (`client/stream.rs`): `GET /internal/v1/edge/config?since=V`
//!   (no `since` before the first config), NDJSON frames applied as they
//!   come; when the connection ends, wait ([`backoff`]: exponential with
//!   full jitter, longer after a 401) and reconnect with `since` = the
//!   version the edge serves. Fail-static: nothing is ever dropped while
//!   disconnected; a refused config keeps the current table.
//! - **heartbeat** ([`heartbeat`]): every interval and right after each
//!   apply or rejection.
//! - **reports** ([`reports`]): per-host traffic windows, folded from the
//!   request path's events and POSTed every `report_interval`.
//! - **persist** ([`persist`]): the table, written back as a snapshot to the
//!   data dir at most once per interval, and at shutdown.

#[path = "client/assemble.rs"]
pub mod assemble;
#[path = "client/backoff.rs"]
pub mod backoff;
#[path = "client/heartbeat.rs"]
pub mod heartbeat;
#[path = "client/lines.rs"]
pub mod lines;
#[path = "client/persist.rs"]
pub mod persist;
#[path = "client/reports.rs"]
pub mod reports;
#[path = "client/stream.rs"]
mod stream;

use crate::config::{ControlPlane, Token};
use crate::state::Edge;
use assemble::Limits;
use async_trait::async_trait;
use backoff::{Backoff, BackoffPolicy};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use portico_protocol::MAX_FRAME_BYTES;
use std::sync::Arc;
use std::time::Duration;
use stream::{End, Outcome};

/// How the client talks to the control plane.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Base URL without a trailing slash.
    pub url: String,
    pub token: Token,
    /// `edge_id` of the heartbeats.
    pub name: String,
    pub heartbeat_interval: Duration,
    pub persist_interval: Duration,
    /// How often closed traffic windows are POSTed.
    pub report_interval: Duration,
    /// No bytes for this long (the server sends keep-alives every ~15 s):
    /// reconnect.
    pub idle_timeout: Duration,
    pub backoff: BackoffPolicy,
    /// Caps of a snapshot sent in parts.
    pub limits: Limits,
    /// The longest line accepted.
    pub max_line: usize,
}

impl ClientSettings {
    /// The settings for a configured control plane, defaults elsewhere.
    pub fn new(cp: &ControlPlane) -> Self {
        ClientSettings {
            url: cp.url.clone(),
            token: cp.token.clone(),
            name: cp.name.clone(),
            heartbeat_interval: cp.heartbeat_interval,
            persist_interval: cp.persist_interval,
            report_interval: cp.report_interval,
            idle_timeout: Duration::from_secs(45),
            backoff: BackoffPolicy::default(),
            limits: Limits::default(),
            max_line: MAX_FRAME_BYTES,
        }
    }
}

pub struct ConfigClient {
    edge: Arc<Edge>,
    settings: ClientSettings,
    http: reqwest::Client,
}

impl ConfigClient {
    /// A client for `settings`; `tls` is used for an `https://` control plane.
    pub fn new(
        edge: Arc<Edge>,
        settings: ClientSettings,
        tls: &rustls::ClientConfig,
    ) -> anyhow::Result<Self> {
        let http = crate::outbound::builder(tls)
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(ConfigClient {
            edge,
            settings,
            http,
        })
    }

    /// Runs the stream, heartbeat, reports and persist loops until `shutdown`.
    pub async fn run(&self, shutdown: ShutdownWatch) {
        tracing::info!(control_plane = %self.settings.url, "config client starting");
        tokio::join!(
            self.follow_stream(shutdown.clone()),
            heartbeat::run(&self.edge, &self.http, &self.settings, shutdown.clone()),
            reports::run(&self.edge, &self.http, &self.settings, shutdown.clone()),
            persist::run(&self.edge, self.settings.persist_interval, shutdown),
        );
    }

    async fn follow_stream(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = Backoff::new(self.settings.backoff);
        loop {
            let since = self.edge.is_ready().then(|| self.edge.table().version());
            let outcome = tokio::select! {
                outcome = stream::follow(&self.edge, &self.http, &self.settings, since) => outcome,
                _ = shutdown.changed() => break,
            };
            let delay = self.delay_after(&outcome, &mut backoff);
            self.edge.metrics.stream_reconnects.inc();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => break,
            }
        }
        self.edge.metrics.stream_connected.set(0);
    }

    /// Logs how the connection ended and says how long to wait.
    fn delay_after(&self, outcome: &Outcome, backoff: &mut Backoff) -> Duration {
        let version = self.edge.table().version();
        if outcome.delivered > 0 && outcome.end.is_benign() {
            backoff.reset();
        }
        if outcome.end == End::Unauthorized {
            let delay = backoff.next_unauthorized_delay();
            tracing::error!(
                control_plane = %self.settings.url,
                retry_in = ?delay,
                %version,
                "the control plane refused the edge's token (401 Unauthorized): check the \
                 token setting (--token, PORTICO_EDGE_TOKEN or token_file); serving the \
                 current table meanwhile"
            );
            return delay;
        }
        let delay = backoff.next_delay();
        match &outcome.end {
            End::Closed => tracing::info!(%version, retry_in = ?delay, "config stream ended"),
            End::Idle => tracing::warn!(
                %version, retry_in = ?delay, "config stream idle for {:?}; reconnecting",
                self.settings.idle_timeout
            ),
            End::Status(status) => {
                tracing::warn!(status, %version, retry_in = ?delay, "config stream refused")
            }
            End::Transport(e) => {
                tracing::warn!(error = %e, %version, retry_in = ?delay, "config stream failed")
            }
            End::Protocol(e) => {
                tracing::warn!(error = %e, %version, retry_in = ?delay, "config stream broke the protocol")
            }
            End::Rejected(refused, _) => {
                tracing::info!(%refused, %version, retry_in = ?delay, "reconnecting after a refused config")
            }
            End::Resync { current, from } => tracing::info!(
                %current, %from, retry_in = ?delay, "delta for another version; reconnecting with since={current}"
            ),
            End::Unauthorized => {}
        }
        delay
    }
}

#[async_trait]
impl BackgroundService for ConfigClient {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown).await;
    }
}
