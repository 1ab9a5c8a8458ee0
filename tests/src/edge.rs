//! Edge end-to-end support: a test CA that issues real certificates, an echo
//! upstream, the `portico-edge` binary as a real process on free ports, and
//! TLS clients that trust the test CA and resolve any name to the edge.

use portico_protocol::{
    CertificateBundle, ConfigVersion, EdgeSettings, HostConfig, PROTOCOL_VERSION, Snapshot,
};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CA whose certificates the test clients trust.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> anyhow::Result<Self> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Portico Test CA");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        Ok(TestCa { issuer })
    }

    pub fn root_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `names`, as the edge receives it.
    pub fn bundle(&self, names: &[&str]) -> anyhow::Result<CertificateBundle> {
        let key = rcgen::KeyPair::generate()?;
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertificateBundle {
            names: names.iter().map(|n| n.to_string()).collect(),
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after: 4_000_000_000,
        })
    }
}

/// A snapshot at version `version` with these hosts and certificates.
pub fn snapshot(
    version: u64,
    hosts: Vec<HostConfig>,
    certificates: Vec<CertificateBundle>,
) -> Snapshot {
    Snapshot {
        v: PROTOCOL_VERSION,
        version: ConfigVersion(version),
        hosts,
        certificates,
        challenges: Vec::new(),
        settings: EdgeSettings::default(),
    }
}

pub fn host(name: &str, targets: &[SocketAddr]) -> HostConfig {
    let mut h = HostConfig::new(name);
    h.targets = targets.iter().map(|t| t.to_string()).collect();
    h
}

/// A free TCP port on loopback (bound and released; the edge binds it next).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `portico-edge` binary of this build.
pub fn edge_binary() -> anyhow::Result<PathBuf> {
    crate::cluster::binary("portico-edge")
}

/// A running edge process; killed when dropped.
pub struct TestEdge {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    child: Child,
}

impl TestEdge {
    /// Starts the edge from `snapshot` (written to a file) in a fresh data dir.
    pub async fn start(snapshot: &Snapshot, extra: &[&str]) -> anyhow::Result<TestEdge> {
        let data_dir = std::env::temp_dir().join(format!(
            "portico-edge-test-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&data_dir)?;
        let file = data_dir.join("input-snapshot.json");
        std::fs::write(&file, serde_json::to_vec(snapshot)?)?;
        let mut args = vec!["--snapshot".to_string(), file.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start_in(&data_dir, &args).await
    }

    /// Starts the edge on an existing data dir with these arguments.
    pub async fn start_in(data_dir: &Path, args: &[String]) -> anyhow::Result<TestEdge> {
        install_crypto();
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (http, https, admin) = (
            loopback(free_port()?),
            loopback(free_port()?),
            loopback(free_port()?),
        );
        let child = Command::new(edge_binary()?)
            .args([
                "--http",
                &http.to_string(),
                "--https",
                &https.to_string(),
                "--admin",
                &admin.to_string(),
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("EDGE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // `POST /test/forget-certificate` on the admin listener.
            .env("PORTICO_EDGE_TEST_HOOKS", "1")
            .stdout(Stdio::null())
            .spawn()?;
        let mut edge = TestEdge {
            http,
            https,
            admin,
            data_dir: data_dir.to_path_buf(),
            child,
        };
        edge.wait_until_listening().await?;
        Ok(edge)
    }

    /// A graceful upgrade: starts a new edge process with `--upgrade` on the
    /// same addresses and data dir, then sends this one SIGQUIT so it hands its
    /// listening sockets over and drains. Returns the new edge once this one
    /// has exited.
    pub async fn upgrade(&mut self, args: &[String]) -> anyhow::Result<TestEdge> {
        let sock = self.data_dir.join("upgrade.sock");
        let _ = std::fs::remove_file(&sock);
        let child = Command::new(edge_binary()?)
            .args([
                "--http",
                &self.http.to_string(),
                "--https",
                &self.https.to_string(),
                "--admin",
                &self.admin.to_string(),
            ])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .arg("--upgrade")
            .env(
                "RUST_LOG",
                std::env::var("EDGE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()?;
        let mut next = TestEdge {
            http: self.http,
            https: self.https,
            admin: self.admin,
            data_dir: self.data_dir.clone(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the new edge never opened {}",
                sock.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await; // allow-sleep: polling with a deadline
        }
        self.signal("QUIT")?;
        while self.child.try_wait()?.is_none() {
            anyhow::ensure!(
                Instant::now() < deadline + Duration::from_secs(20),
                "the old edge did not exit after SIGQUIT"
            );
            tokio::time::sleep(Duration::from_millis(50)).await; // allow-sleep: polling with a deadline
        }
        next.wait_until_listening().await?;
        Ok(next)
    }

    /// Polls the admin /healthz and the HTTPS port until both answer.
    async fn wait_until_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("portico-edge exited during start-up: {status}");
            }
            let admin_ok = client
                .get(format!("http://{}/healthz", self.admin))
                .send()
                .await
                .is_ok();
            if admin_ok && tokio::net::TcpStream::connect(self.https).await.is_ok() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "portico-edge did not start listening in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await; // allow-sleep: polling with a deadline
        }
    }

    pub async fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let resp = reqwest::get(format!("http://{}{path}", self.admin)).await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    /// The value of one metric line (exact name with labels), or 0.
    pub async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        let (_, text) = self.admin_get("/metrics").await?;
        Ok(text
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`HUP`, `QUIT`, `TERM`) to the edge process.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} failed");
        Ok(())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Installs ring as the process's rustls provider (once).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTPS client that trusts `ca` and sends every listed name to the edge.
pub fn https_client(
    ca: &TestCa,
    edge: &TestEdge,
    names: &[&str],
) -> anyhow::Result<reqwest::Client> {
    install_crypto();
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.root_pem().as_bytes())?)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15));
    for n in names {
        builder = builder.resolve(n, edge.https);
    }
    Ok(builder.build()?)
}

/// A plain HTTP client that sends every listed name to the edge's HTTP port.
pub fn http_client(edge: &TestEdge, names: &[&str]) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15));
    for n in names {
        builder = builder.resolve(n, edge.http);
    }
    Ok(builder.build()?)
}

/// A raw TLS connection to the edge with this SNI and ALPN (for handshake-level checks).
pub async fn tls_connect(
    ca_pem: Option<&str>,
    addr: SocketAddr,
    sni: &str,
    alpn: &[&[u8]],
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    install_crypto();
    let config = client_config(ca_pem, alpn)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string())?;
    Ok(connector.connect(name, tcp).await?)
}

fn client_config(ca_pem: Option<&str>, alpn: &[&[u8]]) -> anyhow::Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?;
    let mut config = match ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(cert?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything))
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

use rustls::pki_types::pem::PemObject;

/// For TLS-ALPN-01 checks: the challenge certificate is self-signed by design.
#[derive(Debug)]
struct AcceptAnything;

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &rustls::pki_types::CertificateDer<'_>,
        _d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _m: &[u8],
        _c: &rustls::pki_types::CertificateDer<'_>,
        _d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An upstream that answers every request with what it saw, as JSON:
/// `{"upstream": name, "method", "path", "headers": {...}, "body_len"}`.
/// It reads the whole request body before it answers.
pub async fn echo_upstream(name: &'static str) -> anyhow::Result<SocketAddr> {
    use axum::extract::Request;
    let app = axum::Router::new().fallback(move |req: Request| async move {
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
                )
            })
            .collect();
        let method = req.method().as_str().to_string();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        // Read the whole body before answering, as an upload endpoint does.
        let body_len = axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024)
            .await
            .map(|b| b.len())
            .ok();
        axum::Json(serde_json::json!({
            "upstream": name,
            "method": method,
            "path": path,
            "headers": headers,
            "body_len": body_len,
        }))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}
