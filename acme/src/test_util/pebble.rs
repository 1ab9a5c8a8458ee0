//! A Pebble ACME server (and pebble-challtestsrv as its DNS) run as child
//! processes for one test, killed when the guard drops. The caller says
//! where Pebble validates (its `httpPort` and `tlsPort`: test responders, or
//! a real edge); every name resolves to 127.0.0.1. Pebble's own ports are
//! picked free on 127.0.0.1; readiness is polled with a deadline.

use std::fs::{self, File};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tempfile::TempDir;

use super::{Context, HarnessError};

const READY_DEADLINE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(25);

/// How to run Pebble.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `PEBBLE_WFE_NONCEREJECT`; `None` keeps Pebble's default (5 %).
    pub nonce_reject: Option<u8>,
    /// `PEBBLE_AUTHZREUSE`; `None` keeps Pebble's default (50 %).
    pub authz_reuse: Option<u8>,
    /// Names Pebble refuses to issue for.
    pub blocklist: Vec<String>,
    /// External account binding keys (key id, base64url HMAC key); when
    /// set, Pebble requires a binding for new accounts.
    pub eab_keys: Vec<(String, String)>,
    /// `certificateValidityPeriod`: how long the certificates Pebble issues
    /// are valid, in whole seconds; `None` keeps Pebble's default (5 years).
    /// Short lifetimes let a test see a real renewal come due.
    pub certificate_validity: Option<Duration>,
}

/// A running Pebble; dropping it kills both processes.
pub struct Pebble {
    pub directory_url: String,
    management: String,
    /// The root of Pebble's own HTTPS certificate (which we generated).
    pub tls_root_pem: String,
    /// The same root as a file, for clients configured with a path.
    pub tls_root_file: PathBuf,
    children: Vec<Child>,
    _dir: TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Pebble {
    /// Start Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on
    /// `tls_port` of 127.0.0.1 (every name resolves there). Retries with new
    /// ports for Pebble itself if one was taken meanwhile.
    pub async fn start(
        options: &Options,
        http_port: u16,
        tls_port: u16,
    ) -> Result<Pebble, HarnessError> {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match try_start(options, http_port, tls_port).await {
                Ok(pebble) => return Ok(pebble),
                Err(failure) => failures.push(failure.to_string()),
            }
        }
        Err(HarnessError::new(format!(
            "Pebble did not start (apt-get install pebble):\n{}",
            failures.join("\n---\n")
        )))
    }

    /// Pebble's current issuing root (`/roots/0`, new at every start).
    pub async fn issuing_root_pem(&self) -> Result<String, HarnessError> {
        let url = format!("https://{}/roots/0", self.management);
        match https_get(&url, &self.tls_root_pem).await? {
            (200, body) => Ok(body),
            (status, body) => Err(HarnessError::new(format!("GET /roots/0: {status} {body}"))),
        }
    }
}

async fn try_start(
    options: &Options,
    http_port: u16,
    tls_port: u16,
) -> Result<Pebble, HarnessError> {
    let dir = tempfile::tempdir().context("creating Pebble's directory")?;
    let (dns, dns_management) = (free_port()?, free_port()?);
    let (listen, management) = (free_port()?, free_port()?);
    let tls_root_pem = write_tls_files(dir.path())?;
    let tls_root_file = dir.path().join("tls-root.pem");
    fs::write(&tls_root_file, &tls_root_pem).context("writing tls-root.pem")?;
    let config = dir.path().join("pebble.json");
    fs::write(
        &config,
        config_json(options, dir.path(), listen, management, http_port, tls_port),
    )
    .context("writing pebble.json")?;

    // The guard exists before the first child, so a failed start kills
    // whatever did start.
    let mut started = Pebble {
        directory_url: format!("https://127.0.0.1:{listen}/dir"),
        management: format!("127.0.0.1:{management}"),
        tls_root_pem,
        tls_root_file,
        children: Vec::new(),
        _dir: dir,
    };
    let dir = started._dir.path().to_owned();
    let mut challtestsrv = Command::new(binary("PEBBLE_CHALLTESTSRV", "pebble-challtestsrv"));
    challtestsrv.args(["-dns01", &format!("127.0.0.1:{dns}")]);
    challtestsrv.args(["-http01", "", "-https01", "", "-tlsalpn01", ""]);
    challtestsrv.args(["-management", &format!("127.0.0.1:{dns_management}")]);
    // Every name is 127.0.0.1, where the caller's validation ports are.
    challtestsrv.args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]);
    started
        .children
        .push(spawn(challtestsrv, &dir, "challtestsrv")?);

    let mut pebble = Command::new(binary("PEBBLE", "pebble"));
    pebble.arg("-config").arg(&config);
    pebble.args(["-dnsserver", &format!("127.0.0.1:{dns}")]);
    pebble.env("PEBBLE_VA_NOSLEEP", "1");
    set_percent(&mut pebble, "PEBBLE_WFE_NONCEREJECT", options.nonce_reject);
    set_percent(&mut pebble, "PEBBLE_AUTHZREUSE", options.authz_reuse);
    started.children.push(spawn(pebble, &dir, "pebble")?);

    match wait_ready(&mut started, dns).await {
        Ok(()) => Ok(started),
        Err(why) => Err(HarnessError::new(format!("{why}\n{}", logs(&dir)))),
    }
}

fn config_json(
    options: &Options,
    dir: &Path,
    listen: u16,
    management: u16,
    http_port: u16,
    tls_port: u16,
) -> String {
    let mut config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("tls.pem"),
            "privateKey": dir.join("tls.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": !options.eab_keys.is_empty(),
            "externalAccountMACKeys": options.eab_keys.iter().cloned().collect::<std::collections::HashMap<_, _>>(),
            "domainBlocklist": options.blocklist,
        }
    });
    if let Some(validity) = options.certificate_validity {
        config["pebble"]["certificateValidityPeriod"] = validity.as_secs().max(1).into();
    }
    config.to_string()
}

/// Pebble's HTTPS certificate: a throwaway root signing a leaf for
/// 127.0.0.1 and localhost. Returns the root PEM.
fn write_tls_files(dir: &Path) -> Result<String, HarnessError> {
    let root_key = KeyPair::generate().context("root key")?;
    let mut root = CertificateParams::new(Vec::<String>::new()).context("root params")?;
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root_cert = root.self_signed(&root_key).context("root certificate")?;
    let issuer = Issuer::new(root, root_key);
    let key = KeyPair::generate().context("leaf key")?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .context("leaf params")?
        .signed_by(&key, &issuer)
        .context("leaf certificate")?;
    fs::write(dir.join("tls.pem"), leaf.pem()).context("writing tls.pem")?;
    fs::write(dir.join("tls.key"), key.serialize_pem()).context("writing tls.key")?;
    Ok(root_cert.pem())
}

/// Poll until the DNS server answers and the ACME directory is served.
async fn wait_ready(pebble: &mut Pebble, dns: u16) -> Result<(), String> {
    let deadline = Instant::now() + READY_DEADLINE;
    let mut dns_ok = false;
    loop {
        for child in &mut pebble.children {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("a Pebble process exited early: {status}"));
            }
        }
        dns_ok = dns_ok || dns_answers(dns).await;
        if dns_ok && let Ok((200, _)) = https_get(&pebble.directory_url, &pebble.tls_root_pem).await
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not ready within {READY_DEADLINE:?} (dns: {dns_ok})"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Send one A query for example.com and wait briefly for any answer.
async fn dns_answers(port: u16) -> bool {
    const QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
        \x07example\x03com\x00\x00\x01\x00\x01";
    let Ok(socket) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        return false;
    };
    if socket.send_to(QUERY, ("127.0.0.1", port)).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(
        tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await,
        Ok(Ok(n)) if n >= 12 && buf[..2] == QUERY[..2]
    )
}

/// GET over HTTPS trusting only `root_pem`; returns status and body.
pub async fn https_get(url: &str, root_pem: &str) -> Result<(u16, String), HarnessError> {
    let mut roots = RootCertStore::empty();
    let root = CertificateDer::from_pem_slice(root_pem.as_bytes()).context("reading the root")?;
    roots.add(root).context("adding the root")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(https);
    let uri = url.parse::<http::Uri>().context("the URL")?;
    let response = client.get(uri).await.context(url)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the body")?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A port free on 127.0.0.1 for both TCP and UDP right now.
fn free_port() -> Result<u16, HarnessError> {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").context("binding a TCP port")?;
        let port = tcp.local_addr().context("its address")?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(HarnessError::new("no port free for both TCP and UDP"))
}

fn binary(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

fn set_percent(command: &mut Command, name: &str, value: Option<u8>) {
    if let Some(value) = value {
        command.env(name, value.to_string());
    }
}

fn spawn(mut command: Command, dir: &Path, name: &str) -> Result<Child, HarnessError> {
    let log = File::create(dir.join(format!("{name}.log"))).context("creating a log file")?;
    let err = log.try_clone().context("cloning the log file")?;
    command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .context(&format!("starting {name} (apt-get install pebble)"))
}

fn logs(dir: &Path) -> String {
    ["challtestsrv", "pebble"]
        .iter()
        .map(|name| {
            let text = fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            format!("== {name}.log ==\n{text}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
