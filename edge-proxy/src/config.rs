//! Edge configuration: command-line flags and `PORTICO_EDGE_*` environment
//! variables (clap), optionally backed by a TOML file (`--config`). Validated
//! once at start-up; an error names the setting.

use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "portico-edge", version, about = "Portico edge proxy")]
pub struct Cli {
    /// TOML file with any of the settings below (flags and env win).
    #[arg(long, env = "PORTICO_EDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Run standalone from this snapshot file (JSON `Snapshot`).
    #[arg(long, env = "PORTICO_EDGE_SNAPSHOT")]
    pub snapshot: Option<PathBuf>,
    /// Plain HTTP listener (ACME HTTP-01, redirects, proxying).
    #[arg(long, env = "PORTICO_EDGE_HTTP")]
    pub http: Option<SocketAddr>,
    /// HTTPS listener.
    #[arg(long, env = "PORTICO_EDGE_HTTPS")]
    pub https: Option<SocketAddr>,
    /// Admin listener: /healthz, /readyz, /metrics.
    #[arg(long, env = "PORTICO_EDGE_ADMIN")]
    pub admin: Option<SocketAddr>,
    /// Directory for the last applied snapshot.
    #[arg(long, env = "PORTICO_EDGE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// http:// URL the edge POSTs `{"hostname": ...}` to for an on-demand certificate.
    #[arg(long, env = "PORTICO_EDGE_CERTIFICATE_SOURCE")]
    pub certificate_source: Option<String>,
    /// Worker threads for the proxy.
    #[arg(long, env = "PORTICO_EDGE_THREADS")]
    pub threads: Option<usize>,
    /// PEM file of CAs trusted for upstream TLS (default: the system's roots).
    #[arg(long, env = "PORTICO_EDGE_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Take over the listening sockets of a running edge (graceful upgrade).
    #[arg(long, short = 'u')]
    pub upgrade: bool,
}

/// The TOML file's shape: the same settings, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    snapshot: Option<PathBuf>,
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    certificate_source: Option<String>,
    threads: Option<usize>,
    upstream_connect_timeout_ms: Option<u64>,
    upstream_read_timeout_ms: Option<u64>,
    upstream_ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct EdgeConfig {
    pub snapshot: Option<PathBuf>,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    pub certificate_source: Option<String>,
    pub threads: usize,
    pub upstream_connect_timeout: Duration,
    pub upstream_read_timeout: Duration,
    pub upstream_ca_file: Option<PathBuf>,
    pub upgrade: bool,
}

impl EdgeConfig {
    pub fn from_cli(cli: Cli) -> anyhow::Result<Self> {
        let file: FileConfig = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
                toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let threads = cli.threads.or(file.threads).unwrap_or(1);
        if threads == 0 || threads > 256 {
            anyhow::bail!("threads: must be between 1 and 256, got {threads}");
        }
        let certificate_source = cli.certificate_source.or(file.certificate_source);
        // The source is a node-local or private-network endpoint until the
        // control plane's stream carries certificates; plain HTTP only.
        if let Some(url) = &certificate_source
            && !url.starts_with("http://")
        {
            anyhow::bail!("certificate_source: {url:?} is not an http:// URL");
        }
        let addr = |s: &str| s.parse::<SocketAddr>();
        Ok(EdgeConfig {
            snapshot: cli.snapshot.or(file.snapshot),
            http: cli
                .http
                .or(file.http)
                .map_or_else(|| addr("0.0.0.0:80"), Ok)?,
            https: cli
                .https
                .or(file.https)
                .map_or_else(|| addr("0.0.0.0:443"), Ok)?,
            admin: cli
                .admin
                .or(file.admin)
                .map_or_else(|| addr("127.0.0.1:9180"), Ok)?,
            data_dir: cli
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("/var/lib/portico-edge")),
            certificate_source,
            threads,
            upstream_connect_timeout: Duration::from_millis(
                file.upstream_connect_timeout_ms.unwrap_or(3_000),
            ),
            upstream_read_timeout: Duration::from_millis(
                file.upstream_read_timeout_ms.unwrap_or(60_000),
            ),
            upstream_ca_file: cli.upstream_ca_file.or(file.upstream_ca_file),
            upgrade: cli.upgrade,
        })
    }
}
