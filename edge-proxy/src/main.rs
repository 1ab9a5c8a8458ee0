//! `portico-edge`: the pingora edge proxy binary.

use clap::Parser;
use pingora::listeners::tls::TlsSettings;
use pingora::server::Server;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::services::listening::Service;
use portico_edge::admin::Admin;
use portico_edge::challenge_fetch::ChallengeFetch;
use portico_edge::client::{ClientSettings, ConfigClient};
use portico_edge::config::{Cli, EdgeConfig, GRACE_PERIOD_SECS, SHUTDOWN_TIMEOUT_SECS};
use portico_edge::metrics::Metrics;
use portico_edge::on_demand::OnDemand;
use portico_edge::outbound::{self, Trust};
use portico_edge::proxy::EdgeProxy;
use portico_edge::proxy_protocol::{ProxyHeaderApp, ProxyHeaderFirst, ProxyProtocol};
use portico_edge::reload::SnapshotReloader;
use portico_edge::source::{CertificateSource, HttpSource};
use portico_edge::state::Edge;
use portico_edge::store::{SnapshotStore, read_snapshot};
use portico_edge::tls::{CertResolver, Gate, HandshakeCallbacks};
use portico_edge::upstream::Upstreams;
use std::sync::Arc;
use std::time::Duration;

// The request path allocates per request (headers, buffers); glibc's malloc
// was 16 % of the edge's CPU under load (perf, docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if let Err(e) = run() {
        eprintln!("portico-edge: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn")
            }),
        )
        .compact()
        .init();
    let cli = Cli::parse();
    if cli.print_defaults {
        print!("{}", portico_edge::config::defaults_toml());
        return Ok(());
    }
    let config = EdgeConfig::from_cli(cli)?;
    let edge = Arc::new(Edge::new(
        Metrics::new()?,
        SnapshotStore::open(&config.data_dir)?,
    ));
    load_initial_snapshot(&edge, &config)?;

    let outbound_tls = outbound_tls(&config)?;
    let wait = Duration::from_millis(edge.table().settings().on_demand_wait_ms.clamp(100, 60_000));
    let source: Option<Arc<dyn CertificateSource>> = match config.on_demand_source() {
        Some((url, token)) => Some(Arc::new(HttpSource::new(&url, wait, token, &outbound_tls)?)),
        None => None,
    };
    let on_demand = Arc::new(OnDemand::new(source, wait));
    let challenge_source: Option<Arc<dyn CertificateSource>> = match config.challenge_source() {
        Some((url, token)) => Some(Arc::new(
            HttpSource::new(&url, Duration::from_secs(5), Some(token), &outbound_tls)?
                .with_challenges(&url)?,
        )),
        None => None,
    };
    let challenges = Arc::new(ChallengeFetch::new(challenge_source));

    let mut server = Server::new_with_opt_and_conf(
        Opt {
            upgrade: config.upgrade,
            ..Opt::default()
        },
        server_conf(&config),
    );
    server.bootstrap();

    let proxy = EdgeProxy {
        edge: edge.clone(),
        challenges: challenges.clone(),
        upstreams: Upstreams::default(),
        connect_timeout: config.upstream_connect_timeout,
        read_timeout: config.upstream_read_timeout,
    };
    let app = ProxyHeaderApp {
        edge: edge.clone(),
        mode: config.proxy_protocol,
        inner: Arc::new(pingora::proxy::http_proxy(&server.configuration, proxy)),
    };
    let mut service = Service::new("proxy".to_string(), app);
    service.add_tcp(&config.http.to_string());
    let mut tls = TlsSettings::with_callbacks(Box::new(HandshakeCallbacks))?;
    tls.set_cert_resolver(Arc::new(CertResolver { edge: edge.clone() }));
    tls.enable_h2();
    service.add_tls_with_settings(&config.https.to_string(), None, tls);
    let gate = Gate {
        edge: edge.clone(),
        on_demand,
        challenges,
    };
    service
        .endpoints()
        .set_pre_tls_callback(match config.proxy_protocol {
            ProxyProtocol::Off => Arc::new(gate),
            ProxyProtocol::V2 => Arc::new(ProxyHeaderFirst {
                edge: edge.clone(),
                then: gate,
            }),
        });

    let mut admin = Service::new(
        "admin".to_string(),
        Admin {
            edge: edge.clone(),
            // Tests only: see admin.rs.
            test_hooks: std::env::var("PORTICO_EDGE_TEST_HOOKS").is_ok_and(|v| v == "1"),
        },
    );
    admin.add_tcp(&config.admin.to_string());

    let reloader = SnapshotReloader {
        edge: edge.clone(),
        path: config.snapshot.clone(),
    };
    server.add_service(service);
    server.add_service(admin);
    server.add_service(pingora::services::background::background_service(
        "snapshot reload",
        reloader,
    ));
    if let Some(cp) = &config.control_plane {
        let client = ConfigClient::new(edge.clone(), ClientSettings::new(cp), &outbound_tls)?;
        server.add_service(pingora::services::background::background_service(
            "config stream",
            client,
        ));
    }
    tracing::info!(
        http = %config.http,
        https = %config.https,
        admin = %config.admin,
        proxy_protocol = ?config.proxy_protocol,
        build = portico_edge::build_info::long_version(),
        version = %edge.table().version(),
        control_plane = config.control_plane.as_ref().map(|cp| cp.url.as_str()),
        "edge starting"
    );
    server.run_forever()
}

/// One TLS client config for every outbound call: system roots only if a
/// URL is `https://`, plus `control_plane_ca_file`.
fn outbound_tls(config: &EdgeConfig) -> anyhow::Result<rustls::ClientConfig> {
    let cp = config.control_plane.as_ref();
    let urls = cp
        .map(|cp| cp.url.as_str())
        .into_iter()
        .chain(config.certificate_source.as_deref());
    outbound::tls_config(&Trust::for_urls(
        urls,
        cp.and_then(|cp| cp.ca_file.as_deref()),
    ))
}

/// `--snapshot FILE` wins (and is persisted); otherwise the data dir's copy;
/// otherwise the edge starts empty and not ready.
fn load_initial_snapshot(edge: &Edge, config: &EdgeConfig) -> anyhow::Result<()> {
    if let Some(path) = &config.snapshot {
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("--snapshot {}: {e}", path.display()))?;
        let snapshot = read_snapshot(&bytes)
            .map_err(|e| anyhow::anyhow!("--snapshot {}: {e}", path.display()))?;
        edge.install_snapshot(&snapshot, true)?;
        tracing::info!(version = %snapshot.version, hosts = snapshot.hosts.len(), "snapshot loaded from file");
        return Ok(());
    }
    match edge.store().load()? {
        Some(snapshot) => {
            edge.install_snapshot(&snapshot, false)?;
            tracing::info!(version = %snapshot.version, "snapshot loaded from the data dir");
        }
        None => tracing::warn!(
            "no snapshot yet: every host answers 'not configured' and /readyz is 503"
        ),
    }
    Ok(())
}

fn server_conf(config: &EdgeConfig) -> ServerConf {
    let dir = config.data_dir.display();
    ServerConf {
        threads: config.threads,
        pid_file: format!("{dir}/edge.pid"),
        upgrade_sock: format!("{dir}/upgrade.sock"),
        grace_period_seconds: Some(GRACE_PERIOD_SECS),
        graceful_shutdown_timeout_seconds: Some(SHUTDOWN_TIMEOUT_SECS),
        ca_file: config
            .upstream_ca_file
            .as_ref()
            .map(|p| p.display().to_string()),
        ..ServerConf::default()
    }
}
