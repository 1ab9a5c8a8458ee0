//! Certificates from a real ACME CA, end to end: an edge, a Pebble that
//! validates against that edge's HTTP and HTTPS ports (every name resolves
//! to 127.0.0.1), and a `portico-control-plane serve` process that orders
//! from Pebble, all on one fresh database. The harness itself is
//! `portico_acme::test_util`, shared with the acme crate's own tests.
//!
//! Start-up order is forced by who needs whose address: Pebble needs the
//! edge's ports, the control plane needs Pebble's directory (its worker
//! creates the ACME account at start), and the edge needs a control-plane
//! URL. So the edge token is made in the database directly, the edge
//! follows a [`Relay`] bound up front, and the relay is pointed at the
//! control plane once it runs (connections made before then wait).

use crate::cluster::ControlPlane;
use crate::edge::TestEdge;
pub use crate::eventually;
use crate::fault_proxy::FaultProxy;
pub use crate::relay::Relay;
use crate::{OPERATOR_TOKEN, fresh_database};
use anyhow::Context;
use portico_acme::test_util::{Options, Pebble};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Which challenge the control plane answers (`PORTICO_ACME_CHALLENGE`).
#[derive(Clone, Copy, Debug)]
pub enum Challenge {
    Http01,
    TlsAlpn01,
}

impl Challenge {
    fn setting(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// How to start an [`IssuingCluster`] beyond the challenge type.
pub struct Setup<'a> {
    /// Added to the control plane's environment (after the ACME settings).
    pub env: &'a [(&'a str, &'a str)],
    /// Pebble's options. The default turns nonce faults off: the control
    /// plane backs a transient CA error off for a minute, which no test here
    /// should wait for.
    pub pebble: Options,
    /// Put a [`FaultProxy`] between the control plane and Pebble.
    pub fault_proxy: bool,
    /// Make the primary directory an address nothing listens on, and
    /// Pebble (or the fault proxy) the fallback directory.
    pub unreachable_primary: bool,
    /// With `fault_proxy`: the proxy plays ARI, this window for every
    /// certificate unless the test sets another.
    pub ari: Option<crate::fault_proxy::Window>,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            env: &[],
            pebble: Options {
                nonce_reject: Some(0),
                ..Options::default()
            },
            fault_proxy: false,
            unreachable_primary: false,
            ari: None,
        }
    }
}

/// An edge, Pebble and a control plane ordering from Pebble; everything
/// stops on drop.
pub struct IssuingCluster {
    pub database_url: String,
    pub pool: sqlx::PgPool,
    pub edge: TestEdge,
    pub pebble: Pebble,
    pub control_plane: ControlPlane,
    /// Between the control plane and Pebble, when [`Setup::fault_proxy`].
    pub fault_proxy: Option<FaultProxy>,
    /// A tenant's API key.
    pub key: String,
    /// Between the edge and the control plane.
    pub relay: Relay,
}

impl IssuingCluster {
    /// Starts it all; `extra` goes to the control plane's environment.
    pub async fn start(challenge: Challenge, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let setup = Setup {
            env: extra,
            ..Setup::default()
        };
        Self::start_with(challenge, setup).await
    }

    /// Starts it all as `setup` says.
    pub async fn start_with(challenge: Challenge, setup: Setup<'_>) -> anyhow::Result<Self> {
        let database_url = fresh_database().await?;
        let pool = sqlx::PgPool::connect(&database_url).await?;
        portico_control_plane::db::migrate(&pool).await?;
        let token = portico_control_plane::api::edges::create_edge(&pool, "acme-1", "test")
            .await
            .map_err(|e| anyhow::anyhow!("registering the edge: {e}"))?
            .token;
        let relay = Relay::bind().await?;
        let dir = std::env::temp_dir().join(format!(
            "portico-edge-acme-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        let args = [
            "--control-plane",
            &format!("http://{}", relay.addr),
            "--token",
            &token,
            "--name",
            "acme-1",
        ]
        .map(String::from);
        let edge = TestEdge::start_in(&dir, &args).await?;
        let pebble = Pebble::start(&setup.pebble, edge.http.port(), edge.https.port()).await?;
        let fault_proxy = match setup.fault_proxy {
            true => Some(
                FaultProxy::start_with_ari(&pebble.directory_url, &pebble.tls_root_pem, setup.ari)
                    .await?,
            ),
            false => None,
        };
        let (directory, ca_file) = match &fault_proxy {
            Some(proxy) => (proxy.directory_url.clone(), proxy.ca_file.clone()),
            None => (pebble.directory_url.clone(), pebble.tls_root_file.clone()),
        };
        let ca_file = ca_file.display().to_string();
        let closed = format!("https://127.0.0.1:{}/dir", crate::edge::free_port()?);
        let mut env = vec![
            ("PORTICO_ISSUER", "acme"),
            ("PORTICO_ACME_CHALLENGE", challenge.setting()),
            ("PORTICO_WORKER_IN_SERVE", "true"),
        ];
        if setup.unreachable_primary {
            env.extend([
                ("PORTICO_ACME_DIRECTORY", closed.as_str()),
                ("PORTICO_ACME_FALLBACK_DIRECTORY", directory.as_str()),
                ("PORTICO_ACME_FALLBACK_CA_FILE", ca_file.as_str()),
            ]);
        } else {
            env.extend([
                ("PORTICO_ACME_DIRECTORY", directory.as_str()),
                ("PORTICO_ACME_CA_FILE", ca_file.as_str()),
            ]);
        }
        env.extend_from_slice(setup.env);
        let control_plane = ControlPlane::start(&database_url, &env).await?;
        relay.forward_to(control_plane.addr);
        let key = crate::tenant_key(&control_plane.base()).await?;
        let cluster = IssuingCluster {
            database_url,
            pool,
            edge,
            pebble,
            control_plane,
            fault_proxy,
            key,
            relay,
        };
        cluster.wait_edge_current().await?;
        Ok(cluster)
    }

    pub fn base(&self) -> String {
        self.control_plane.base()
    }

    /// Pebble's issuing root, fetched from its management API.
    pub async fn issuing_root(&self) -> anyhow::Result<String> {
        Ok(self.pebble.issuing_root_pem().await?)
    }

    /// An API call with the tenant's key: (status, JSON body or Null).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base()))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Creates a domain (`on_demand` TLS as given) served by `target`;
    /// returns the created domain.
    pub async fn add_domain(
        &self,
        host: &str,
        target: SocketAddr,
        on_demand: bool,
    ) -> anyhow::Result<Value> {
        let body = json!({"hostname": host, "target": target.to_string(), "tls": {"on_demand": on_demand}});
        let (status, domain) = self
            .api(reqwest::Method::POST, "/v1/domains", Some(body))
            .await?;
        anyhow::ensure!(status == 201, "create {host}: {status} {domain}");
        Ok(domain)
    }

    /// Marks a domain verified as the DNS check would (DNS is the
    /// verification tests' subject), publishes it, and waits until the edge
    /// has that version.
    pub async fn activate(&self, host: &str) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE domains SET status = 'active', dns_checked_at = now() WHERE hostname = $1",
        )
        .bind(host)
        .execute(&self.pool)
        .await?;
        let mut tx = self.pool.begin().await?;
        portico_control_plane::db::config::publish(
            &mut tx,
            &[portico_control_plane::db::config::ConfigKey::Host(
                host.into(),
            )],
        )
        .await?;
        tx.commit().await?;
        self.wait_edge_current().await
    }

    /// Waits until the edge is up and has applied the current version.
    pub async fn wait_edge_current(&self) -> anyhow::Result<()> {
        let url = format!("{}/v1/ops/edges", self.base());
        eventually(30, "the edge to apply the current config", || async {
            let ops: Value = reqwest::Client::new()
                .get(&url)
                .bearer_auth(OPERATOR_TOKEN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let edges = ops["edges"].as_array()?;
            (!edges.is_empty() && edges.iter().all(|e| e["status"] == "up" && e["lag"] == 0))
                .then_some(())
        })
        .await
    }

    /// How many orders were sent to the CA for `host`.
    pub async fn orders_at_ca(&self, host: &str) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM acme_events WHERE hostname = $1 AND kind = 'order'",
        )
        .bind(host)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Waits until `hosts` certificates are stored. Shortened: the backoff.
    /// Each deferred order is made due now, after its (host, last error,
    /// whether its retry was at least 30 s off) is noted; any order that failed
    /// for good ends the wait.
    pub async fn recover(&self, hosts: usize) -> anyhow::Result<Vec<(String, String, bool)>> {
        let c = self;
        let deadline = Instant::now() + Duration::from_secs(45);
        let mut deferrals = Vec::new();
        loop {
            let nudged: Vec<(String, Option<String>, bool)> = sqlx::query_as(
                "WITH due AS (
                     SELECT o.domain_id, d.hostname, o.last_error,
                            o.next_attempt_at > now() + interval '30 seconds' AS backed_off
                     FROM certificate_orders o JOIN domains d ON d.id = o.domain_id
                     WHERE o.status = 'deferred' AND o.next_attempt_at > now()
                     FOR UPDATE OF o),
                 nudge AS (
                     UPDATE certificate_orders o SET next_attempt_at = now()
                     FROM due WHERE o.domain_id = due.domain_id)
                 SELECT hostname, last_error, backed_off FROM due",
            )
            .fetch_all(&c.pool)
            .await?;
            deferrals.extend(
                nudged
                    .into_iter()
                    .map(|(h, e, b)| (h, e.unwrap_or_default(), b)),
            );
            let failed: Vec<(String, Option<String>)> = sqlx::query_as(
                "SELECT d.hostname, o.last_error FROM certificate_orders o
                 JOIN domains d ON d.id = o.domain_id WHERE o.status = 'failed'",
            )
            .fetch_all(&c.pool)
            .await?;
            anyhow::ensure!(
                failed.is_empty(),
                "orders failed for good: {failed:?} (log: {})",
                c.control_plane.log.display()
            );
            let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM certificates")
                .fetch_one(&c.pool)
                .await?;
            if stored == i64::try_from(hosts)? {
                return Ok(deferrals);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{stored} of {hosts} certificates in time; deferred {deferrals:?} (log: {})",
                c.control_plane.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await; // allow-sleep: polling with a deadline
        }
    }

    /// An HTTPS client that trusts only `root_pem`, sends `host` to the
    /// edge and records the peer certificate of each response.
    pub fn https_client(&self, root_pem: &str, host: &str) -> anyhow::Result<reqwest::Client> {
        crate::edge::install_crypto();
        Ok(reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(root_pem.as_bytes())?])
            .tls_info(true)
            .resolve(host, self.edge.https)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()?)
    }
}

/// The DER of the certificate the server presented for `resp`.
pub fn peer_certificate(resp: &reqwest::Response) -> anyhow::Result<Vec<u8>> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(<[u8]>::to_vec)
        .context("no peer certificate recorded (tls_info)")
}

/// The stored chain of `host`'s certificate, if there is one.
pub async fn stored_chain(c: &IssuingCluster, host: &str) -> anyhow::Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT c.chain_pem FROM certificates c JOIN domains d ON d.id = c.domain_id
         WHERE d.hostname = $1",
    )
    .bind(host)
    .fetch_optional(&c.pool)
    .await?)
}

/// The leaf of a PEM chain, in DER.
pub fn leaf_der(chain_pem: &str) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    let leaf = rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or_else(|| anyhow::anyhow!("empty chain"))??;
    Ok(leaf.to_vec())
}
