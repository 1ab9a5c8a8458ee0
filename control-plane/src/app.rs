//! Wiring: settings → pool → state → router, the HTTP server and (optionally)
//! the job workers in the same process. Binaries and tests start Portico the
//! same way, through [`start`].

use crate::api::{self, AppState};
use crate::db;
use crate::dns::DnsChecker;
use crate::infra::Infra;
use crate::infra::fly::{FlyConfig, FlyMachines};
use crate::infra::local::{ControlPlaneLink, LocalConfig, LocalProcesses, find_edge_binary};
use crate::jobs::{self, JobContext};
use crate::publish::{self, Publisher};
use crate::settings::{InfraSetting, Settings};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running control plane. Dropping it does not stop it; call [`Running::stop`].
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    /// Edges this process runs itself (`PORTICO_INFRA=local`).
    local: Option<Arc<LocalProcesses>>,
}

pub struct Options {
    pub http: bool,
    pub worker: bool,
    /// The machines the repair ladders may restart and replace. `None`:
    /// built from `PORTICO_INFRA` (dev mode passes its own).
    pub infra: Option<Arc<dyn Infra>>,
}

impl Options {
    pub fn new(http: bool, worker: bool) -> Self {
        Options {
            http,
            worker,
            infra: None,
        }
    }
}

/// Builds the shared state; background tasks it starts end with `stop`.
pub async fn state(settings: Settings, stop: &CancellationToken) -> anyhow::Result<AppState> {
    let pool = db::connect(&settings.database_url, settings.db_max_connections).await?;
    if settings.run_migrations {
        db::migrate(&pool).await?;
    }
    let dns = DnsChecker::new(&settings.dns)?;
    let limiter =
        api::middleware::limiter(settings.limits.rate_per_second, settings.limits.rate_burst);
    let settings = Arc::new(settings);
    let webhooks = crate::webhooks::Webhooks::new(settings.clone())?;
    let (resync, _) = tokio::sync::broadcast::channel(64);
    let latest = publish::notifier::spawn(pool.clone(), stop.clone(), resync.clone());
    let alerts = crate::alerts::Alerts::new(pool.clone(), &settings.alerts)
        .map_err(|e| anyhow::anyhow!("alert emails: {e}"))?;
    Ok(AppState {
        publisher: Publisher::new(pool.clone(), settings.clone(), latest, resync),
        pool,
        settings,
        dns,
        limiter,
        webhooks,
        alerts,
    })
}

/// The jobs' context, without infra (repairs skip restart and replace).
pub fn job_context(state: &AppState) -> JobContext {
    JobContext {
        pool: state.pool.clone(),
        settings: state.settings.clone(),
        dns: state.dns.clone(),
        webhooks: state.webhooks.clone(),
        alerts: state.alerts.clone(),
        infra: None,
    }
}

/// Starts the HTTP server and/or the workers in background tasks.
pub async fn start(settings: Settings, options: Options) -> anyhow::Result<Running> {
    let listen = settings.listen;
    let stop = CancellationToken::new();
    let state = state(settings, &stop).await?;
    let mut tasks = Vec::new();
    let mut addr = listen;
    if options.http {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (PORTICO_LISTEN): {e}"))?;
        addr = listener.local_addr()?;
        let router = api::router(state.clone());
        let stopped = stop.clone().cancelled_owned();
        tasks.push(tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await?;
            Ok(())
        }));
    }
    let mut local = None;
    if options.worker {
        let infra = match options.infra {
            Some(infra) => Some(infra),
            None => {
                let (infra, spawned) = infra_from_settings(&state.settings, addr).await?;
                local = spawned;
                infra
            }
        };
        let ctx = JobContext {
            infra,
            ..job_context(&state)
        };
        tasks.push(tokio::spawn(jobs::run(ctx, stop.clone())));
    }
    spawn_limiter_gc(&state, stop.clone());
    spawn_compaction(&state, stop.clone());
    // Retries failed alert emails; any replica may (rows are leased).
    tokio::spawn(state.alerts.clone().run(stop.clone()));
    Ok(Running {
        addr,
        state,
        stop,
        tasks,
        local,
    })
}

/// Forgets idle rate-limit buckets so that random tokens cannot grow memory.
fn spawn_limiter_gc(state: &AppState, stop: CancellationToken) {
    let limiter = state.limiter.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => { limiter.retain_recent(); limiter.shrink_to_fit(); }
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// Compacts and prunes the config change log (any replica may; the
/// statements are idempotent).
fn spawn_compaction(state: &AppState, stop: CancellationToken) {
    let pool = state.pool.clone();
    let c = state.settings.config.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(c.compact_every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            match db::config::compact(&pool, c.retain_versions, c.retain_for.as_secs_f64()).await {
                Ok(done) if done.superseded + done.expired > 0 => {
                    tracing::info!(
                        superseded = done.superseded,
                        expired = done.expired,
                        log_floor = done.log_floor,
                        "config log compacted"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "config log compaction failed"),
            }
        }
    });
}

impl Running {
    /// Stops accepting, lets in-flight requests and jobs finish, then returns.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        for t in self.tasks {
            t.await??;
        }
        if let Some(local) = &self.local {
            local.stop_all().await?;
        }
        self.state.pool.close().await;
        Ok(())
    }

    /// Waits until SIGTERM or Ctrl-C, then stops gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.stop().await
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The infra adapter `PORTICO_INFRA` names. With `local`, this process
/// starts its edges now (registered with this control plane) and returns
/// them so that `stop` stops them.
async fn infra_from_settings(
    settings: &Settings,
    addr: SocketAddr,
) -> anyhow::Result<(Option<Arc<dyn Infra>>, Option<Arc<LocalProcesses>>)> {
    match &settings.health.infra {
        InfraSetting::None => Ok((None, None)),
        InfraSetting::Fly => {
            let fly = settings
                .fly
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("PORTICO_INFRA=fly needs PORTICO_FLY_APP"))?;
            let machines = FlyMachines::new(FlyConfig::from_settings(fly))?;
            Ok((Some(Arc::new(machines)), None))
        }
        InfraSetting::Local {
            count,
            dir,
            control_plane_url,
            env,
        } => {
            let dir = dir.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("portico-edges-{}", std::process::id()))
            });
            let url = control_plane_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", reachable(addr)));
            let pool = db::connect(&settings.database_url, 2).await?;
            let local = Arc::new(LocalProcesses::new(LocalConfig {
                control_plane: Some(ControlPlaneLink { url, pool }),
                env: env.clone(),
                ..LocalConfig::new(find_edge_binary()?, dir)
            }));
            for _ in 0..*count {
                let m = local.spawn(None).await?;
                tracing::info!(edge = %m.name, machine = %m.id, https = %m.addresses.https, "local edge started");
            }
            let infra: Arc<dyn Infra> = local.clone();
            Ok((Some(infra), Some(local)))
        }
    }
}

/// An address others can connect to: `0.0.0.0`/`::` become loopback.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}
