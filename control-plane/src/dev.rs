//! The `dev` subcommand (a module of the binary, not of the library): the
//! control plane with its workers, one edge through `LocalProcesses`, a demo
//! upstream, the dev CA and a DNS stub, and the curls to try them.

use anyhow::Context;
use axum::http::{HeaderMap, Method, Uri};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portico_acme::DevCa;
use portico_control_plane::api::tenants::create_tenant;
use portico_control_plane::app::{self, Options};
use portico_control_plane::crypto::Keyring;
use portico_control_plane::db;
use portico_control_plane::db::tenants::Plan;
use portico_control_plane::dev_dns::{DevDns, DevZone, DnsListeners};
use portico_control_plane::infra::local::{
    ControlPlaneLink, LocalConfig, LocalProcesses, find_edge_binary,
};
use portico_control_plane::infra::{Addresses, Infra, Machine, MachineId, Probe, wait_until_ready};
use portico_control_plane::settings::{IssuerSetting, LogFormat, Settings};
use portico_control_plane::telemetry;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Dev mode: its DNS server's sockets (unless `PORTICO_DNS_NAMESERVERS` is
/// set), its settings, then [`dev`].
pub async fn dev_mode() -> anyhow::Result<()> {
    let dev_dir =
        std::env::var_os("PORTICO_DEV_DIR").map_or_else(|| PathBuf::from(DEV_DIR), PathBuf::from);
    let dns = match env_var("PORTICO_DNS_NAMESERVERS") {
        Some(_) => None,
        None => Some(
            DnsListeners::bind()
                .await
                .context("binding the dev DNS server on 127.0.0.1")?,
        ),
    };
    let settings = dev_settings(&dev_dir, dns.as_ref().map(DnsListeners::addr))?;
    telemetry::init(settings.log_format);
    dev(settings, dev_dir, dns).await
}

/// Development defaults under whatever the environment sets (an empty
/// variable counts as unset). Without `PORTICO_OPERATOR_TOKEN`, a random
/// one (printed with the instructions) enables the operator endpoints.
/// Certificates come from the dev CA in `<dev dir>/ca`, sealed with the key
/// in `<dev dir>/encryption-key`; domains are verified against the dev DNS
/// server at `dns`.
fn dev_settings(dev_dir: &Path, dns: Option<SocketAddr>) -> anyhow::Result<Settings> {
    let mut env: HashMap<String, String> = std::env::vars().collect();
    let operator_token = format!("dev-operator-{}", hex::encode(rand::random::<[u8; 16]>()));
    let ca_dir = dev_dir.join("ca").display().to_string();
    let encryption_key = match env_var("PORTICO_ENCRYPTION_KEYS") {
        Some(_) => String::new(),
        None => dev_encryption_key(dev_dir)?,
    };
    let nameserver = dns.map(|addr| addr.to_string()).unwrap_or_default();
    let defaults = [
        ("PORTICO_WORKER_IN_SERVE", "true"),
        ("PORTICO_ALLOW_LOCAL_TARGETS", "true"),
        // Webhooks to a receiver on this machine (http://127.0.0.1:PORT/...).
        ("PORTICO_WEBHOOK_ALLOW_HTTP", "true"),
        ("PORTICO_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("PORTICO_EDGE_IPV4", "127.0.0.1"),
        ("PORTICO_DNS_TIMEOUT_MS", "1500"),
        ("PORTICO_DNS_NAMESERVERS", nameserver.as_str()),
        ("PORTICO_SCHEDULER_TICK_SECS", "2"),
        // Kill the edge and watch the ladder restart it within seconds.
        ("PORTICO_HEALTH_TICK_MS", "1000"),
        ("PORTICO_HEALTH_EDGE_INTERVAL_MS", "2000"),
        ("PORTICO_HEALTH_HOST_INTERVAL_MS", "10000"),
        ("PORTICO_REPAIR_TIME_SCALE", "0.2"),
        ("PORTICO_OPERATOR_TOKEN", operator_token.as_str()),
        ("PORTICO_ISSUER", "dev"),
        ("PORTICO_DEV_CA_DIR", ca_dir.as_str()),
        ("PORTICO_ENCRYPTION_KEYS", encryption_key.as_str()),
    ];
    for (k, v) in defaults {
        if env_var(k).is_none() && !v.is_empty() {
            env.insert(k.to_string(), v.to_string());
        }
    }
    let settings =
        Settings::from_sources(env).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    if settings.log_format != LogFormat::Pretty {
        tracing::debug!("dev mode with JSON logs");
    }
    Ok(settings)
}

/// A variable of the environment, unless unset or blank.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The `PORTICO_ENCRYPTION_KEYS` value kept in `<dev dir>/encryption-key`
/// (mode 0600), made on the first run: `dev:<base64 of 32 random bytes>`.
/// The same key on every run lets later runs open the certificate keys
/// that earlier runs stored.
fn dev_encryption_key(dev_dir: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dev_dir.join(DEV_ENCRYPTION_KEY_FILE);
    std::fs::create_dir_all(dev_dir).with_context(|| format!("creating {}", dev_dir.display()))?;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path);
    let key = match created {
        Ok(mut file) => {
            let key = format!("dev:{}", STANDARD.encode(rand::random::<[u8; 32]>()));
            file.write_all(format!("{key}\n").as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            key
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string(),
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    match Keyring::parse(&key) {
        Ok(keys) if !keys.is_empty() => Ok(key),
        Ok(_) => anyhow::bail!("{} is empty; delete it to make a new key", path.display()),
        Err(e) => anyhow::bail!("{}: {e}; delete it to make a new key", path.display()),
    }
}

/// Where dev mode keeps the edge's data dir, log and token, the dev CA and
/// the encryption key, unless `PORTICO_DEV_DIR` says otherwise.
const DEV_DIR: &str = ".dev";
/// The encryption key's file in the dev dir.
const DEV_ENCRYPTION_KEY_FILE: &str = "encryption-key";
/// The root certificate's file in the dev CA's directory (`DevCa` writes it).
const DEV_CA_ROOT_FILE: &str = "dev-ca.pem";
/// How long dev mode waits for the edge's `/readyz`.
const DEV_EDGE_READY_WITHIN: Duration = Duration::from_secs(30);

/// What dev mode listens on (port 0: any free port).
struct DevAddresses {
    upstream: SocketAddr,
    edge: Addresses,
}

impl DevAddresses {
    fn from_env() -> anyhow::Result<Self> {
        let addr = |var: &str, default: &str| -> anyhow::Result<SocketAddr> {
            let raw = std::env::var(var).unwrap_or_else(|_| default.to_string());
            raw.parse()
                .with_context(|| format!("{var}: {raw:?} is not an address like {default}"))
        };
        Ok(DevAddresses {
            upstream: addr("PORTICO_DEV_UPSTREAM", "127.0.0.1:3000")?,
            edge: Addresses {
                http: addr("PORTICO_DEV_EDGE_HTTP", "127.0.0.1:8081")?,
                https: addr("PORTICO_DEV_EDGE_HTTPS", "127.0.0.1:8444")?,
                admin: addr("PORTICO_DEV_EDGE_ADMIN", "127.0.0.1:9180")?,
            },
        })
    }

    /// A taken edge port is named here, not in the edge's log.
    fn check_edge_ports_free(&self) -> anyhow::Result<()> {
        let e = &self.edge;
        for (var, addr) in [
            ("PORTICO_DEV_EDGE_HTTP", e.http),
            ("PORTICO_DEV_EDGE_HTTPS", e.https),
            ("PORTICO_DEV_EDGE_ADMIN", e.admin),
        ] {
            std::net::TcpListener::bind(addr).with_context(|| {
                format!("cannot listen on {addr} ({var}); is another Portico dev running?")
            })?;
        }
        Ok(())
    }
}

/// Dev mode: the DNS server, the control plane with its workers, a demo
/// tenant, a demo upstream and one edge (a `LocalProcesses` child), until
/// SIGINT/SIGTERM; then the edge, the upstream, the control plane and the
/// DNS server stop, in that order.
async fn dev(
    settings: Settings,
    dev_dir: PathBuf,
    dns: Option<DnsListeners>,
) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal()?;
    let addresses = DevAddresses::from_env()?;
    addresses.check_edge_ports_free()?;
    let edge_bin = find_edge_binary()?;
    let certificates = CertificateSource::prepare(&settings)?;
    let dns = start_dev_dns(dns, &settings)?;
    let upstream_stop = CancellationToken::new();
    let upstream = DemoUpstream::start(addresses.upstream, upstream_stop.clone()).await?;
    let operator_token = settings.operator_token.as_ref().map(|t| t.expose().clone());
    // The edge is a `LocalProcesses` child; the repair ladders restart it
    // through the same adapter.
    let local = Arc::new(LocalProcesses::new(LocalConfig {
        control_plane: Some(ControlPlaneLink {
            url: format!("http://{}", app::reachable(settings.listen)),
            pool: db::connect(&settings.database_url, 2).await?,
        }),
        ..LocalConfig::new(edge_bin, dev_dir)
    }));
    let infra: Arc<dyn Infra> = local.clone();
    let running = app::start(
        settings,
        Options {
            infra: Some(infra),
            ..Options::new(true, true)
        },
    )
    .await?;
    let result = async {
        let created = create_tenant(&running.state.pool, "Demo tenant", Plan::Pro)
            .await
            .map_err(|e| anyhow::anyhow!("creating the demo tenant: {e}"))?;
        let edge = start_dev_edge(&local, addresses.edge, &shutdown).await?;
        let Some(edge) = edge else { return Ok(()) };
        print_dev_instructions(&DevInstructions {
            hostname: demo_hostname(&running.state.pool).await?,
            base: format!("http://{}", app::reachable(running.addr)),
            tenant: created.tenant.id.to_string(),
            api_key: created.api_key.key.clone(),
            operator_token: operator_token.as_deref(),
            edge: &edge,
            log: local.log_path(&edge.id).await?,
            upstream: upstream.addr,
            dns: dns.as_ref().map(DevDns::addr),
            certificates: &certificates,
            edge_pid: local.pid(&edge.id).await?,
        });
        watch_dev_edge(&local, &edge.id, &shutdown).await;
        anyhow::Ok(())
    }
    .await;
    tracing::info!("shutting down");
    let edges = local.stop_all().await;
    upstream_stop.cancel();
    let upstream = upstream.stop().await;
    let control_plane = running.stop().await;
    let dns = match dns {
        Some(dns) => dns.stop().await,
        None => Ok(()),
    };
    result?;
    edges?;
    upstream?;
    control_plane?;
    dns
}

/// The dev DNS server on `listeners`, answering from the `domains` table
/// through a small pool of its own (connected on the first query, so it
/// can serve before the control plane has migrated the database).
fn start_dev_dns(
    listeners: Option<DnsListeners>,
    settings: &Settings,
) -> anyhow::Result<Option<DevDns<sqlx::PgPool>>> {
    let Some(listeners) = listeners else {
        return Ok(None);
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(settings.database_url.expose())
        .context("DATABASE_URL")?;
    let dns = DevDns::serve(listeners, DevZone::new(&settings.platform, pool));
    tracing::info!(addr = %dns.addr(), "dev DNS server answering for every domain");
    Ok(Some(dns))
}

/// Where the edge's certificates come from, for the HTTPS curl.
enum CertificateSource {
    /// The dev CA; clients trust its root, in this file.
    DevCa { root: PathBuf },
    /// An ACME CA.
    Acme { directory: String },
    /// No issuer: HTTPS handshakes fail.
    None,
}

impl CertificateSource {
    /// The source the settings name. The dev CA is opened (and on the first
    /// run created) here, before the control plane's issuer opens it, so
    /// that its root is in place for the curl from the start.
    fn prepare(settings: &Settings) -> anyhow::Result<Self> {
        Ok(match &settings.certificates.issuer {
            IssuerSetting::DevCa { dir } => {
                let ca = DevCa::open(dir)
                    .map_err(|e| anyhow::anyhow!("PORTICO_DEV_CA_DIR {}: {e}", dir.display()))?;
                let root = ca.dir().join(DEV_CA_ROOT_FILE);
                anyhow::ensure!(
                    root.is_file(),
                    "the dev CA has no root at {}",
                    root.display()
                );
                CertificateSource::DevCa {
                    root: std::path::absolute(&root).unwrap_or(root),
                }
            }
            IssuerSetting::Acme { directory_url, .. } => CertificateSource::Acme {
                directory: directory_url.clone(),
            },
            IssuerSetting::None => CertificateSource::None,
        })
    }
}

/// Starts the edge and waits for its `/readyz`; `None` when a signal came first.
async fn start_dev_edge(
    local: &LocalProcesses,
    addresses: Addresses,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Machine>> {
    let edge = local.spawn(Some(addresses)).await?;
    let log = local.log_path(&edge.id).await?;
    tracing::info!(edge = %edge.name, log = %log.display(), "waiting for the edge to be ready");
    let probe = tokio::select! {
        probe = wait_until_ready(local, &edge.id, DEV_EDGE_READY_WITHIN) => probe?,
        () = shutdown.cancelled() => return Ok(None),
    };
    let (what, see) = match probe {
        Probe::Ready => return Ok(Some(edge)),
        // The probe names the log.
        Probe::Down(why) => (format!("stopped during start-up: {why}"), String::new()),
        other => (
            format!(
                "is not ready after {} s ({other})",
                DEV_EDGE_READY_WITHIN.as_secs()
            ),
            format!("; see {}", log.display()),
        ),
    };
    anyhow::bail!(
        "the edge {} {what}{see}. The end of its log:\n{}",
        edge.name,
        tail(&log, 15)
    )
}

/// Until shutdown; says once if the edge stops serving.
async fn watch_dev_edge(local: &LocalProcesses, id: &MachineId, shutdown: &CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut last = Probe::Ready;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let Ok(probe) = local.probe(id).await else {
            return;
        };
        if probe != last {
            match &probe {
                Probe::Ready => tracing::info!(edge = %id, "the edge is ready again"),
                other => tracing::warn!(edge = %id, "the edge stopped serving: {other}"),
            }
            last = probe;
        }
    }
}

struct DevInstructions<'a> {
    /// The hostname the curls add and request.
    hostname: String,
    base: String,
    tenant: String,
    api_key: String,
    operator_token: Option<&'a str>,
    edge: &'a Machine,
    log: PathBuf,
    upstream: SocketAddr,
    /// The dev DNS server, unless `PORTICO_DNS_NAMESERVERS` is set.
    dns: Option<SocketAddr>,
    certificates: &'a CertificateSource,
    /// The edge's process id, for the self-repair demo.
    edge_pid: Option<u32>,
}

fn print_dev_instructions(i: &DevInstructions<'_>) {
    let (base, key, e, host) = (&i.base, &i.api_key, &i.edge.addresses, &i.hostname);
    println!();
    println!("Portico dev is running:");
    println!("  control plane:  {base}   (API docs: {base}/v1/openapi.json)");
    println!(
        "  edge {}:  http://{}  https://{}  admin http://{}/metrics   (log: {})",
        i.edge.name,
        e.http,
        e.https,
        e.admin,
        i.log.display()
    );
    println!("  demo upstream:  http://{}", i.upstream);
    match i.dns {
        Some(dns) => println!(
            "  dev DNS:        {dns}   (answers for every domain as if its records were in place)"
        ),
        None => println!("  DNS:            PORTICO_DNS_NAMESERVERS (domains are verified there)"),
    }
    println!("  demo tenant:    {}", i.tenant);
    println!("  demo API key:   {key}   (shown once)");
    println!();
    println!("Add a domain that routes to the demo upstream:");
    if host != "shop.example.com" {
        println!(
            "(shop.example.com was added by an earlier run and still routes through the edge)"
        );
    }
    println!("  curl -sS -X POST {base}/v1/domains \\");
    println!("    -H 'Authorization: Bearer {key}' \\");
    println!("    -H 'Content-Type: application/json' \\");
    println!(
        "    -d '{{\"hostname\": \"{host}\", \"target\": \"{}\"}}'",
        i.upstream
    );
    println!();
    println!("Then send a request through the edge (it gets the change within a second or so):");
    println!(
        "  curl -sS --resolve {host}:{}:{} http://{host}:{}/",
        e.http.port(),
        curl_ip(e.http),
        e.http.port()
    );
    print_https_instructions(i);
    println!();
    println!("See the domain's status and what DNS it needs:");
    println!("  curl -sS {base}/v1/domains -H 'Authorization: Bearer {key}'");
    match i.operator_token {
        Some(op) => {
            println!("See the edge as an operator (status, applied config version, lag):");
            println!("  curl -sS {base}/v1/ops/edges -H 'Authorization: Bearer {op}'");
        }
        None => println!("Operator endpoints (/v1/ops/edges) need PORTICO_OPERATOR_TOKEN."),
    }
    println!();
    println!("Watch self-repair: open the ops dashboard, {base}/ops (log in with the operator");
    println!("token above), then kill the edge; within seconds its row turns unhealthy, the");
    println!("repair ladder restarts it through the local infra adapter and the run closes:");
    match i.edge_pid {
        Some(pid) => println!("  kill -9 {pid}"),
        None => println!("  kill -9 <the edge's pid>"),
    }
    if let Some(op) = i.operator_token {
        println!("  curl -sS {base}/v1/ops/repairs -H 'Authorization: Bearer {op}'");
    }
    println!("Receive signed webhooks on this machine (dev mode allows http and local targets):");
    println!("  curl -sS -X POST {base}/v1/webhook-endpoints -H 'Authorization: Bearer {key}' \\");
    println!(
        "    -H 'Content-Type: application/json' -d '{{\"url\": \"http://127.0.0.1:9000/hooks\"}}'"
    );
    println!();
    println!("Press Ctrl-C to stop the edge, the upstream, the control plane and the DNS server.");
}

/// The HTTPS curl, and how its certificate comes about.
fn print_https_instructions(i: &DevInstructions<'_>) {
    let (host, https) = (&i.hostname, i.edge.addresses.https);
    let (port, ip) = (https.port(), curl_ip(https));
    let verified = match i.dns {
        Some(_) => {
            "The domain is verified within a few seconds of the POST (the dev DNS answers for it)"
        }
        None => "The domain is verified once its DNS records are in place",
    };
    match i.certificates {
        CertificateSource::DevCa { root } => {
            println!(
                "And over HTTPS, with a certificate from the dev CA, checked against its root:"
            );
            println!(
                "  curl -sS --cacert {} --resolve {host}:{port}:{ip} https://{host}:{port}/",
                root.display()
            );
            println!("{verified},");
            println!(
                "and its certificate is issued right after (a request in between waits for it)."
            );
            println!("Before it is verified the edge refuses the TLS handshake");
            println!("(curl: \"tlsv1 alert access denied\"): retry.");
        }
        CertificateSource::Acme { directory } => {
            println!("And over HTTPS, with a certificate from {directory}:");
            println!("  curl -sS --resolve {host}:{port}:{ip} https://{host}:{port}/");
            println!("{verified},");
            println!(
                "and its certificate is ordered then; the CA must reach the edge to validate it."
            );
            println!("Until it is issued the edge fails the TLS handshake.");
        }
        CertificateSource::None => {
            println!("HTTPS (port {port}) needs a certificate issuer: PORTICO_ISSUER is `none`.")
        }
    }
}

/// The edge's address as curl's `--resolve` takes it.
fn curl_ip(addr: SocketAddr) -> String {
    match app::reachable(addr).ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    }
}

/// `shop.example.com`, or, when an earlier run's demo tenant has it (the
/// POST would answer 409), the first free `shop-N.example.com`.
async fn demo_hostname(pool: &sqlx::PgPool) -> anyhow::Result<String> {
    let candidates: Vec<String> = std::iter::once("shop.example.com".to_string())
        .chain((2..100).map(|n| format!("shop-{n}.example.com")))
        .collect();
    let mut conn = pool.acquire().await?;
    let taken = db::published::hosts_named(&mut conn, &candidates).await?;
    Ok(candidates
        .into_iter()
        .find(|c| !taken.iter().any(|t| &t.hostname == c))
        .unwrap_or_else(|| "shop.example.com".to_string()))
}

/// The last `lines` lines of a log, for an error message.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Cancelled on the first SIGINT or SIGTERM. The handlers are installed
/// before anything starts, so a signal during start-up still stops cleanly.
fn shutdown_on_signal() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        cancel.cancel();
    });
    Ok(token)
}

/// The demo upstream: answers every request with a greeting and the
/// headers an edge adds, so a curl through the edge shows the proxying.
struct DemoUpstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl DemoUpstream {
    async fn start(addr: SocketAddr, stop: CancellationToken) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (PORTICO_DEV_UPSTREAM)"))?;
        let addr = listener.local_addr()?;
        let router = axum::Router::new().fallback(demo_answer);
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Ok(DemoUpstream { addr, task })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }
}

async fn demo_answer(method: Method, uri: Uri, headers: HeaderMap) -> String {
    let mut body = format!("Hello from the demo upstream\n{method} {uri}\n");
    for (name, value) in &headers {
        let name = name.as_str();
        if name == "host" || name.starts_with("x-forwarded-") || name == "portico-incoming-host" {
            let value = String::from_utf8_lossy(value.as_bytes());
            body.push_str(&format!("{name}: {value}\n"));
        }
    }
    body
}
