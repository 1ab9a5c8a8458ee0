//! Edge configuration: command-line flags and `PORTICO_EDGE_*` environment
//! variables (clap), optionally backed by a TOML file (`--config`). Validated
//! once at start-up; an error names the setting. The control plane's token is
//! a [`Token`], which never prints.

use crate::proxy_protocol::ProxyProtocol;
use clap::Parser;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Listeners and data dir when not configured.
pub const DEFAULT_HTTP: &str = "0.0.0.0:80";
pub const DEFAULT_HTTPS: &str = "0.0.0.0:443";
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9180";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/portico-edge";
/// The signal that drains the edge (pingora: SIGTERM = graceful terminate;
/// SIGINT = fast shutdown; SIGQUIT = graceful upgrade, hands the sockets over).
pub const SHUTDOWN_SIGNAL: &str = "SIGTERM";
/// After SIGTERM the listeners close and in-flight requests get this long...
pub const GRACE_PERIOD_SECS: u64 = 5;
/// ...then the runtimes get at most this long to stop. A supervisor must
/// wait at least the sum before it kills the process.
pub const SHUTDOWN_TIMEOUT_SECS: u64 = 10;

#[derive(Debug, Parser)]
#[command(
    name = "portico-edge",
    version = crate::build_info::long_version(),
    about = "Portico edge proxy"
)]
pub struct Cli {
    /// Print the built-in defaults (listeners, shutdown timing) as TOML and
    /// exit; deployment files are checked against them.
    #[arg(long)]
    pub print_defaults: bool,
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
    /// `v2`: every connection to the HTTP and HTTPS listeners starts with a
    /// PROXY protocol v2 header (Fly.io's `proxy_proto` handler), whose
    /// source address is the client's. Connections without one are closed.
    #[arg(long, env = "PORTICO_EDGE_PROXY_PROTOCOL", value_enum)]
    pub proxy_protocol: Option<ProxyProtocol>,
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
    /// Control plane base URL (http:// or https://): stream the config from
    /// it, send heartbeats to it and ask it for on-demand certificates.
    #[arg(long, env = "PORTICO_EDGE_CONTROL_PLANE")]
    pub control_plane: Option<String>,
    /// Bearer token for the control plane (or `--token-file`).
    #[arg(long, env = "PORTICO_EDGE_TOKEN", hide_env_values = true)]
    pub token: Option<Token>,
    /// File whose content (trimmed) is the bearer token.
    #[arg(long, env = "PORTICO_EDGE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// This edge's name, sent as `edge_id` in heartbeats.
    #[arg(long, env = "PORTICO_EDGE_NAME")]
    pub name: Option<String>,
    /// PEM file of CAs trusted for an https:// control plane, besides the system's.
    #[arg(long, env = "PORTICO_EDGE_CONTROL_PLANE_CA_FILE")]
    pub control_plane_ca_file: Option<PathBuf>,
    /// How often traffic reports are sent, ms (default 10000).
    #[arg(long, env = "PORTICO_EDGE_REPORT_INTERVAL_MS")]
    pub report_interval_ms: Option<u64>,
}

/// The TOML file's shape: the same settings, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    snapshot: Option<PathBuf>,
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
    proxy_protocol: Option<ProxyProtocol>,
    admin: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    certificate_source: Option<String>,
    threads: Option<usize>,
    upstream_connect_timeout_ms: Option<u64>,
    upstream_read_timeout_ms: Option<u64>,
    upstream_ca_file: Option<PathBuf>,
    control_plane: Option<String>,
    token_file: Option<PathBuf>,
    name: Option<String>,
    control_plane_ca_file: Option<PathBuf>,
    heartbeat_interval_ms: Option<u64>,
    persist_interval_ms: Option<u64>,
    report_interval_ms: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct EdgeConfig {
    pub snapshot: Option<PathBuf>,
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// Whether the HTTP and HTTPS listeners expect a PROXY header first.
    pub proxy_protocol: ProxyProtocol,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    pub certificate_source: Option<String>,
    pub threads: usize,
    pub upstream_connect_timeout: Duration,
    pub upstream_read_timeout: Duration,
    pub upstream_ca_file: Option<PathBuf>,
    pub upgrade: bool,
    /// Where the config comes from, when not standalone.
    pub control_plane: Option<ControlPlane>,
}

/// The control plane the edge streams its config from.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    /// Base URL, `http://` or `https://`, without a trailing slash.
    pub url: String,
    pub token: Token,
    /// `edge_id` of the heartbeats; empty when not configured.
    pub name: String,
    /// Extra CAs for an `https://` control plane.
    pub ca_file: Option<PathBuf>,
    pub heartbeat_interval: Duration,
    pub persist_interval: Duration,
    pub report_interval: Duration,
}

/// A bearer token. `Debug` and `Display` print `[redacted]`; only
/// [`Token::expose`] gives the secret, for the `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Parses a token: surrounding whitespace is trimmed; the rest must be
    /// non-empty printable ASCII without spaces (it goes into a header).
    /// The error never contains the token.
    pub fn parse(raw: &str) -> Result<Token, &'static str> {
        let token = raw.trim();
        if token.is_empty() {
            return Err("is empty");
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be printable ASCII without spaces");
        }
        Ok(Token(token.to_owned()))
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// For clap: never fails (clap would print the rejected value); the value
/// is checked by [`Token::parse`] during validation.
impl std::str::FromStr for Token {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Token(s.to_owned()))
    }
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
        let certificate_source = cli
            .certificate_source
            .clone()
            .or(file.certificate_source.clone());
        if let Some(url) = &certificate_source {
            check_url(url)
                .map_err(|e| anyhow::anyhow!("certificate_source: {} {e}", shown(url)))?;
        }
        let control_plane = control_plane(&cli, &file)?;
        let addr = |s: &str| s.parse::<SocketAddr>();
        Ok(EdgeConfig {
            snapshot: cli.snapshot.or(file.snapshot),
            http: cli
                .http
                .or(file.http)
                .map_or_else(|| addr(DEFAULT_HTTP), Ok)?,
            https: cli
                .https
                .or(file.https)
                .map_or_else(|| addr(DEFAULT_HTTPS), Ok)?,
            proxy_protocol: cli
                .proxy_protocol
                .or(file.proxy_protocol)
                .unwrap_or_default(),
            admin: cli
                .admin
                .or(file.admin)
                .map_or_else(|| addr(DEFAULT_ADMIN), Ok)?,
            data_dir: cli
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
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
            control_plane,
        })
    }

    /// Where on-demand certificates come from: `certificate_source` if set
    /// (no token sent), else the control plane's certificate endpoint (with
    /// the token), else nowhere.
    pub fn on_demand_source(&self) -> Option<(String, Option<Token>)> {
        match (&self.certificate_source, &self.control_plane) {
            (Some(url), _) => Some((url.clone(), None)),
            (None, Some(cp)) => Some((
                format!("{}/internal/v1/edge/certificates/request", cp.url),
                Some(cp.token.clone()),
            )),
            (None, None) => None,
        }
    }

    /// Where challenge answers the table lacks are fetched from: the
    /// control plane (with the token); nowhere for a standalone edge.
    pub fn challenge_source(&self) -> Option<(String, Token)> {
        self.control_plane.as_ref().map(|cp| {
            (
                format!("{}/internal/v1/edge/challenges", cp.url),
                cp.token.clone(),
            )
        })
    }
}

/// The built-in defaults as TOML, for `--print-defaults`.
pub fn defaults_toml() -> String {
    format!(
        "http = \"{DEFAULT_HTTP}\"\nhttps = \"{DEFAULT_HTTPS}\"\nadmin = \"{DEFAULT_ADMIN}\"\n\
         data_dir = \"{DEFAULT_DATA_DIR}\"\nproxy_protocol = \"off\"\n\
         shutdown_signal = \"{SHUTDOWN_SIGNAL}\"\ngrace_period_secs = {GRACE_PERIOD_SECS}\n\
         shutdown_timeout_secs = {SHUTDOWN_TIMEOUT_SECS}\n"
    )
}

/// Validates the control plane settings; `None` when no control plane is set.
fn control_plane(cli: &Cli, file: &FileConfig) -> anyhow::Result<Option<ControlPlane>> {
    let Some(raw) = cli.control_plane.as_ref().or(file.control_plane.as_ref()) else {
        return Ok(None);
    };
    check_url(raw).map_err(|e| anyhow::anyhow!("control_plane: {} {e}", shown(raw)))?;
    let url = raw.trim_end_matches('/').to_owned();
    let name = cli.name.clone().or(file.name.clone()).unwrap_or_default();
    if name.len() > 253 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        anyhow::bail!("name: {name:?} must be at most 253 printable ASCII characters, no spaces");
    }
    let interval = |setting: &str, value: Option<u64>, default: u64, min: u64| {
        let ms = value.unwrap_or(default);
        if !(min..=3_600_000).contains(&ms) {
            anyhow::bail!("{setting}: must be between {min} and 3600000, got {ms}");
        }
        Ok(Duration::from_millis(ms))
    };
    Ok(Some(ControlPlane {
        url,
        token: token(cli, file)?,
        name,
        ca_file: cli
            .control_plane_ca_file
            .clone()
            .or(file.control_plane_ca_file.clone()),
        heartbeat_interval: interval(
            "heartbeat_interval_ms",
            file.heartbeat_interval_ms,
            10_000,
            100,
        )?,
        persist_interval: interval("persist_interval_ms", file.persist_interval_ms, 1_000, 10)?,
        report_interval: interval(
            "report_interval_ms",
            cli.report_interval_ms.or(file.report_interval_ms),
            10_000,
            100,
        )?,
    }))
}

/// The token: `--token`/`PORTICO_EDGE_TOKEN`, else the content of
/// `--token-file`/`PORTICO_EDGE_TOKEN_FILE`/`token_file`. Errors name the
/// setting, never the token.
fn token(cli: &Cli, file: &FileConfig) -> anyhow::Result<Token> {
    if let Some(token) = &cli.token {
        return Token::parse(token.expose()).map_err(|e| anyhow::anyhow!("token: {e}"));
    }
    let Some(path) = cli.token_file.as_ref().or(file.token_file.as_ref()) else {
        anyhow::bail!(
            "token: required with control_plane (set --token, PORTICO_EDGE_TOKEN or token_file)"
        );
    };
    let text = read_token_file(path)?;
    Token::parse(&text).map_err(|e| anyhow::anyhow!("token_file {}: {e}", path.display()))
}

fn read_token_file(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("token_file {}: {e}", path.display()))
}

/// A URL quoted for an error message, with any credentials in it replaced.
fn shown(raw: &str) -> String {
    match reqwest::Url::parse(raw) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("[redacted]");
            let _ = url.set_password(None);
            format!("{:?}", url.as_str())
        }
        _ => format!("{raw:?}"),
    }
}

/// An `http://` or `https://` URL with a host and without credentials, a
/// query or a fragment (paths are appended to it).
fn check_url(raw: &str) -> Result<(), &'static str> {
    let url = reqwest::Url::parse(raw).map_err(|_| "is not a URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("is not an http:// or https:// URL");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (use the token setting)");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or a fragment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> anyhow::Result<EdgeConfig> {
        let argv = std::iter::once("portico-edge").chain(args.iter().copied());
        EdgeConfig::from_cli(Cli::try_parse_from(argv)?)
    }

    fn error(args: &[&str]) -> String {
        config(args).unwrap_err().to_string()
    }

    fn temp_file(name: &str, content: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("portico-edge-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn without_a_control_plane_the_edge_is_standalone() {
        let c = config(&[]).unwrap();
        assert!(c.control_plane.is_none());
        assert!(c.on_demand_source().is_none());
        // A token alone is ignored.
        assert!(config(&["--token", "t"]).unwrap().control_plane.is_none());
    }

    #[test]
    fn a_control_plane_takes_a_token_a_name_and_defaults() {
        let c = config(&[
            "--control-plane",
            "http://cp.internal:8080/",
            "--token",
            " pte_secret \n",
            "--name",
            "fra-1",
        ])
        .unwrap();
        let cp = c.control_plane.clone().unwrap();
        assert_eq!(cp.url, "http://cp.internal:8080");
        assert_eq!(cp.token.expose(), "pte_secret");
        assert_eq!(cp.name, "fra-1");
        assert_eq!(cp.heartbeat_interval, Duration::from_millis(10_000));
        assert_eq!(cp.persist_interval, Duration::from_millis(1_000));
        assert_eq!(cp.report_interval, Duration::from_millis(10_000));
        let (url, token) = c.on_demand_source().unwrap();
        assert_eq!(
            url,
            "http://cp.internal:8080/internal/v1/edge/certificates/request"
        );
        assert_eq!(token.unwrap().expose(), "pte_secret");
        // An explicit certificate source wins and gets no token.
        let c = config(&[
            "--control-plane",
            "https://cp.example.com/portico",
            "--token",
            "t",
            "--certificate-source",
            "http://127.0.0.1:1/certs",
        ])
        .unwrap();
        assert_eq!(
            c.control_plane.as_ref().unwrap().url,
            "https://cp.example.com/portico"
        );
        assert_eq!(
            c.on_demand_source().map(|(u, t)| (u, t.is_none())),
            Some(("http://127.0.0.1:1/certs".to_owned(), true))
        );
    }

    #[test]
    fn the_token_never_prints() {
        let c = config(&["--control-plane", "http://cp", "--token", "pte_secret"]).unwrap();
        let shown = format!("{c:?} {}", c.control_plane.as_ref().unwrap().token);
        assert!(!shown.contains("pte_secret"), "{shown}");
        assert!(shown.contains("[redacted]"));
        let cli = Cli::try_parse_from(["portico-edge", "--token", "pte_secret"]).unwrap();
        assert!(!format!("{cli:?}").contains("pte_secret"));
    }

    #[test]
    fn the_token_can_come_from_a_file() {
        let file = temp_file("token", "pte_from_file\n");
        let toml = temp_file(
            "edge.toml",
            &format!(
                "control_plane = \"http://cp\"\ntoken_file = {:?}\nheartbeat_interval_ms = 250\n\
                 persist_interval_ms = 50\nreport_interval_ms = 500\nname = \"ams-1\"\n",
                file.display().to_string()
            ),
        );
        let c = config(&["--config", toml.to_str().unwrap()]).unwrap();
        let cp = c.control_plane.unwrap();
        assert_eq!(cp.token.expose(), "pte_from_file");
        assert_eq!(cp.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(cp.persist_interval, Duration::from_millis(50));
        assert_eq!(cp.report_interval, Duration::from_millis(500));
        assert_eq!(cp.name, "ams-1");
        let f = file.to_str().unwrap();
        let c = config(&["--control-plane", "http://cp", "--token-file", f]).unwrap();
        assert_eq!(c.control_plane.unwrap().token.expose(), "pte_from_file");
        let empty = temp_file("empty-token", " \n");
        let err = error(&[
            "--control-plane",
            "http://cp",
            "--token-file",
            empty.to_str().unwrap(),
        ]);
        assert!(
            err.starts_with("token_file ") && err.ends_with("is empty"),
            "{err}"
        );
        let err = error(&[
            "--control-plane",
            "http://cp",
            "--token-file",
            "/nonexistent/t",
        ]);
        assert!(err.contains("token_file /nonexistent/t"), "{err}");
    }

    #[test]
    fn printed_defaults_are_the_defaults() {
        let printed: toml::Table = toml::from_str(&defaults_toml()).unwrap();
        let c = config(&[]).unwrap();
        assert_eq!(printed["http"].as_str(), Some(c.http.to_string().as_str()));
        assert_eq!(
            printed["https"].as_str(),
            Some(c.https.to_string().as_str())
        );
        assert_eq!(
            printed["admin"].as_str(),
            Some(c.admin.to_string().as_str())
        );
        assert_eq!(
            printed["data_dir"].as_str().map(PathBuf::from),
            Some(c.data_dir)
        );
        assert_eq!(c.proxy_protocol, ProxyProtocol::Off);
        assert_eq!(printed["proxy_protocol"].as_str(), Some("off"));
        assert_eq!(printed["grace_period_secs"].as_integer(), Some(5));
    }

    #[test]
    fn proxy_protocol_is_off_unless_set_by_flag_env_name_or_file() {
        assert_eq!(config(&[]).unwrap().proxy_protocol, ProxyProtocol::Off);
        let c = config(&["--proxy-protocol", "v2"]).unwrap();
        assert_eq!(c.proxy_protocol, ProxyProtocol::V2);
        let toml = temp_file("pp.toml", "proxy_protocol = \"v2\"\n");
        let c = config(&["--config", toml.to_str().unwrap()]).unwrap();
        assert_eq!(c.proxy_protocol, ProxyProtocol::V2);
        // The flag wins over the file.
        let t = toml.to_str().unwrap();
        let c = config(&["--config", t, "--proxy-protocol", "off"]).unwrap();
        assert_eq!(c.proxy_protocol, ProxyProtocol::Off);
        assert!(config(&["--proxy-protocol", "v1"]).is_err());
        let bad = temp_file("pp-bad.toml", "proxy_protocol = \"yes\"\n");
        let err = error(&["--config", bad.to_str().unwrap()]);
        assert!(err.contains("proxy_protocol"), "{err}");
    }

    #[test]
    fn bad_control_plane_settings_are_named() {
        let err = error(&["--control-plane", "http://cp"]);
        assert!(
            err.starts_with("token: required with control_plane"),
            "{err}"
        );
        let err = error(&["--control-plane", "http://cp", "--token", "two words"]);
        assert_eq!(err, "token: must be printable ASCII without spaces");
        for (url, why) in [
            ("ftp://cp", "is not an http:// or https:// URL"),
            ("cp.internal", "is not a URL"),
            ("http://user:secret@cp", "must not carry credentials"),
            ("http://cp/?a=1", "must not have a query"),
        ] {
            let err = error(&["--control-plane", url, "--token", "t"]);
            assert!(
                err.starts_with("control_plane: ") && err.contains(why),
                "{url}: {err}"
            );
        }
        let err = error(&[
            "--control-plane",
            "http://cp",
            "--token",
            "t",
            "--name",
            "a b",
        ]);
        assert!(err.starts_with("name: "), "{err}");
        let toml = temp_file("fast.toml", "heartbeat_interval_ms = 99\n");
        let t = toml.to_str().unwrap();
        let err = error(&[
            "--config",
            t,
            "--control-plane",
            "http://cp",
            "--token",
            "t",
        ]);
        assert_eq!(
            err,
            "heartbeat_interval_ms: must be between 100 and 3600000, got 99"
        );
        let err = error(&["--certificate-source", "ftp://x"]);
        assert!(err.starts_with("certificate_source: "), "{err}");
    }
}
