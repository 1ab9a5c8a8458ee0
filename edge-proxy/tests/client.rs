//! The config-stream client against a fake control plane (tests/support):
//! snapshots and deltas applied in order and persisted, refused configs
//! kept out and reported in heartbeats, reconnects resuming with `since`,
//! 401s, idle and oversized streams, a restart serving from disk, HTTPS.

mod support;

use portico_edge::client::backoff::BackoffPolicy;
use portico_edge::client::{ClientSettings, ConfigClient};
use portico_edge::config::Token;
use portico_edge::metrics::Metrics;
use portico_edge::outbound::{self, Trust};
use portico_edge::state::Edge;
use portico_edge::store::SnapshotStore;
use portico_edge::table::RoutingTable;
use portico_protocol::{
    CertificateBundle, Change, ConfigVersion, Delta, EdgeSettings, Frame, HostConfig,
    MAX_FRAME_BYTES, PROTOCOL_VERSION, Snapshot, SnapshotBegin, SnapshotChunk, SnapshotEnd,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use support::{FakeControlPlane, Script, TOKEN, eventually};
use tokio::sync::watch;

/// An edge with its own data dir and a running config client.
struct Running {
    edge: Arc<Edge>,
    dir: PathBuf,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts a client for `settings` on a fresh edge in `dir` (loading the
    /// dir's snapshot first, as main does).
    fn start(
        dir: PathBuf,
        settings: ClientSettings,
        tls: &rustls::ClientConfig,
    ) -> anyhow::Result<Self> {
        let edge = Arc::new(Edge::new(Metrics::new()?, SnapshotStore::open(&dir)?));
        if let Some(snapshot) = edge.store().load()? {
            edge.install_snapshot(&snapshot, false)?;
        }
        let client = ConfigClient::new(edge.clone(), settings, tls)?;
        let (shutdown, watch) = watch::channel(false);
        let task = tokio::spawn(async move { client.run(watch).await });
        Ok(Running {
            edge,
            dir,
            shutdown,
            task,
        })
    }

    fn plain(fake: &FakeControlPlane) -> anyhow::Result<Self> {
        Self::start(data_dir(), settings(&fake.url())?, &plain_tls()?)
    }

    fn version(&self) -> u64 {
        self.edge.table().version().0
    }

    fn routes(&self, host: &str) -> bool {
        self.edge.table().route(host).route().is_some()
    }

    /// Signals shutdown and waits for the client (and its last persist).
    async fn stop(self) -> anyhow::Result<PathBuf> {
        self.shutdown.send(true)?;
        tokio::time::timeout(Duration::from_secs(20), self.task).await??;
        Ok(self.dir)
    }
}

fn data_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("portico-edge-client-{}-{n}", std::process::id()))
}

fn settings(url: &str) -> anyhow::Result<ClientSettings> {
    Ok(ClientSettings {
        url: url.to_owned(),
        token: Token::parse(TOKEN).map_err(anyhow::Error::msg)?,
        name: "test-edge".into(),
        heartbeat_interval: Duration::from_millis(200),
        persist_interval: Duration::from_millis(20),
        report_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(30),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(50),
            unauthorized: Duration::from_millis(30),
        },
        limits: Default::default(),
        max_line: MAX_FRAME_BYTES,
    })
}

fn plain_tls() -> anyhow::Result<rustls::ClientConfig> {
    outbound::tls_config(&Trust::default())
}

fn host(name: &str) -> HostConfig {
    HostConfig {
        targets: vec!["127.0.0.1:9".into()],
        ..HostConfig::new(name)
    }
}

fn cert(names: &[&str]) -> anyhow::Result<CertificateBundle> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names.clone())?;
    Ok(CertificateBundle {
        names,
        chain_pem: cert.pem(),
        key_pem: signing_key.serialize_pem(),
        not_after: 4_000_000_000,
    })
}

/// A bundle whose key belongs to another certificate.
fn mismatched_cert(name: &str) -> anyhow::Result<CertificateBundle> {
    let mut bundle = cert(&[name])?;
    bundle.key_pem = cert(&[name])?.key_pem;
    Ok(bundle)
}

fn snapshot(version: u64, hosts: Vec<HostConfig>, certificates: Vec<CertificateBundle>) -> Frame {
    Frame::Snapshot(Snapshot {
        v: PROTOCOL_VERSION,
        version: ConfigVersion(version),
        hosts,
        certificates,
        challenges: Vec::new(),
        settings: EdgeSettings::default(),
    })
}

fn delta(from: u64, to: u64, changes: Vec<Change>) -> Frame {
    Frame::Delta(Delta {
        v: PROTOCOL_VERSION,
        from: ConfigVersion(from),
        to: ConfigVersion(to),
        changes,
    })
}

fn upsert(name: &str) -> Change {
    Change::UpsertHost { host: host(name) }
}

/// The `since` of every config request from index `from` on.
fn sinces(fake: &FakeControlPlane, from: usize) -> Vec<Option<String>> {
    fake.config_requests()
        .iter()
        .skip(from)
        .map(|r| r.target.split_once("?since=").map(|(_, v)| v.to_owned()))
        .collect()
}

#[tokio::test]
async fn a_snapshot_then_deltas_are_applied_in_order_persisted_and_reported() -> anyhow::Result<()>
{
    let fake = FakeControlPlane::start().await?;
    let feed = fake.stream();
    let edge = Running::plain(&fake)?;
    feed.frame(&snapshot(1, vec![host("a.example.com")], vec![]))?;
    feed.frame(&delta(
        1,
        2,
        vec![
            upsert("b.example.com"),
            Change::UpsertCertificate {
                certificate: cert(&["b.example.com"])?,
            },
        ],
    ))?;
    feed.frame(&Frame::KeepAlive {
        v: PROTOCOL_VERSION,
    })?;
    feed.raw("{\"type\":\"gossip\",\"v\":1}\n")?;
    feed.frame(&delta(
        2,
        3,
        vec![Change::RemoveHost {
            hostname: "a.example.com".into(),
        }],
    ))?;
    // Already applied: skipped, not an error.
    feed.frame(&delta(2, 3, vec![upsert("never.example.com")]))?;
    eventually("version 3", || (edge.version() == 3).then_some(())).await?;
    eventually("the unknown frame counted", || {
        (edge.edge.metrics.unknown_frames.get() == 1).then_some(())
    })
    .await?;
    assert!(!edge.routes("a.example.com") && edge.routes("b.example.com"));
    assert!(!edge.routes("never.example.com"));
    assert!(edge.edge.table().certificate("b.example.com").is_some());
    assert!(edge.edge.is_ready());

    let first = &fake.config_requests()[0];
    assert_eq!(
        first.target, "/internal/v1/edge/config",
        "no since before a snapshot"
    );
    assert_eq!(first.headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(first.headers["accept"], "application/x-ndjson");

    let hb = eventually("a heartbeat at version 3", || {
        fake.heartbeats()
            .into_iter()
            .find(|h| h.applied_version == ConfigVersion(3))
    })
    .await?;
    assert_eq!(
        (hb.edge_id.as_str(), hb.hosts, hb.certificates),
        ("test-edge", 1, 1)
    );
    assert_eq!(hb.build, env!("CARGO_PKG_VERSION"));
    assert_eq!(hb.counters["unknown_frames_skipped"], 1);
    assert_eq!(hb.rejection, None);

    let store = SnapshotStore::open(&edge.dir)?;
    let saved = eventually("version 3 on disk", || {
        store
            .load()
            .ok()
            .flatten()
            .filter(|s| s.version == ConfigVersion(3))
    })
    .await?;
    let reloaded = RoutingTable::from_snapshot(&saved)?;
    assert!(reloaded.route("b.example.com").route().is_some());
    assert!(reloaded.route("a.example.com").route().is_none());
    assert!(reloaded.certificate("b.example.com").is_some());
    let dir = edge.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn a_refused_delta_keeps_the_table_is_reported_and_the_stream_resumes_since_the_current_version()
-> anyhow::Result<()> {
    let fake = FakeControlPlane::start().await?;
    let feed = fake.stream();
    let edge = Running::plain(&fake)?;
    feed.frame(&snapshot(1, vec![host("a.example.com")], vec![]))?;
    feed.frame(&delta(
        1,
        2,
        vec![
            upsert("b.example.com"),
            Change::UpsertCertificate {
                certificate: mismatched_cert("b.example.com")?,
            },
        ],
    ))?;
    let hb = eventually("a heartbeat with the rejection", || {
        fake.heartbeats()
            .into_iter()
            .find(|h| h.rejection.is_some())
    })
    .await?;
    let rejection = hb
        .rejection
        .ok_or_else(|| anyhow::anyhow!("no rejection"))?;
    assert_eq!(rejection.version, ConfigVersion(2));
    assert!(
        rejection.reason.contains("does not match"),
        "{}",
        rejection.reason
    );
    assert!(
        rejection.reason.contains("b.example.com"),
        "{}",
        rejection.reason
    );
    assert_eq!(hb.applied_version, ConfigVersion(1));
    assert_eq!(hb.counters["rejected_configs_total"], 1);
    assert_eq!(edge.version(), 1);
    assert!(edge.routes("a.example.com") && !edge.routes("b.example.com"));

    // The client dropped that stream; it reconnects from version 1.
    eventually("a reconnect", || {
        (fake.config_requests().len() >= 2).then_some(())
    })
    .await?;
    let fixed = fake.stream();
    fixed.frame(&delta(1, 2, vec![upsert("c.example.com")]))?;
    eventually("version 2", || (edge.version() == 2).then_some(())).await?;
    assert!(edge.routes("c.example.com") && !edge.routes("b.example.com"));
    assert!(
        sinces(&fake, 1).iter().all(|s| s.as_deref() == Some("1")),
        "{:?}",
        sinces(&fake, 1)
    );
    eventually("a heartbeat at 2 without the rejection", || {
        fake.heartbeats()
            .into_iter()
            .find(|h| h.applied_version == ConfigVersion(2) && h.rejection.is_none())
    })
    .await?;
    assert_eq!(edge.edge.metrics.rejected_configs.get(), 1);
    let dir = edge.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn a_401_keeps_serving_the_table_and_retries() -> anyhow::Result<()> {
    let fake = FakeControlPlane::start().await?;
    let dir = data_dir();
    SnapshotStore::open(&dir)?.save(&Snapshot {
        v: PROTOCOL_VERSION,
        version: ConfigVersion(5),
        hosts: vec![host("a.example.com")],
        certificates: Vec::new(),
        challenges: Vec::new(),
        settings: EdgeSettings::default(),
    })?;
    fake.script(Script::Unauthorized);
    fake.script(Script::Unauthorized);
    let feed = fake.stream();
    feed.frame(&delta(5, 6, vec![upsert("b.example.com")]))?;
    let edge = Running::start(dir, settings(&fake.url())?, &plain_tls()?)?;
    assert!(edge.routes("a.example.com"), "served from disk at once");
    eventually("version 6", || (edge.version() == 6).then_some(())).await?;
    assert!(edge.routes("a.example.com") && edge.routes("b.example.com"));
    assert_eq!(
        sinces(&fake, 0)[..3],
        [Some("5".into()), Some("5".into()), Some("5".into())]
    );
    let dir = edge.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn a_snapshot_in_parts_is_assembled_and_a_delta_for_another_version_resyncs()
-> anyhow::Result<()> {
    let fake = FakeControlPlane::start().await?;
    let feed = fake.stream();
    let edge = Running::plain(&fake)?;
    feed.frame(&Frame::SnapshotBegin(SnapshotBegin {
        v: PROTOCOL_VERSION,
        version: ConfigVersion(3),
        settings: EdgeSettings::default(),
    }))?;
    for chunk in [
        (vec![host("a.example.com")], vec![cert(&["a.example.com"])?]),
        (vec![host("b.example.com")], vec![]),
    ] {
        feed.frame(&Frame::SnapshotChunk(SnapshotChunk {
            v: PROTOCOL_VERSION,
            hosts: chunk.0,
            certificates: chunk.1,
            challenges: Vec::new(),
        }))?;
    }
    feed.frame(&Frame::SnapshotEnd(SnapshotEnd {
        v: PROTOCOL_VERSION,
        version: ConfigVersion(3),
        hosts: 2,
        certificates: 1,
        challenges: 0,
    }))?;
    feed.frame(&delta(7, 8, vec![upsert("z.example.com")]))?;
    eventually("version 3", || (edge.version() == 3).then_some(())).await?;
    assert!(edge.routes("a.example.com") && edge.routes("b.example.com"));
    eventually("a reconnect", || {
        (fake.config_requests().len() >= 2).then_some(())
    })
    .await?;
    let resumed = fake.stream();
    resumed.frame(&delta(3, 4, vec![upsert("c.example.com")]))?;
    eventually("version 4", || (edge.version() == 4).then_some(())).await?;
    assert!(!edge.routes("z.example.com"));
    assert!(
        sinces(&fake, 1).iter().all(|s| s.as_deref() == Some("3")),
        "{:?}",
        fake.config_requests()
    );
    assert_eq!(
        edge.edge.metrics.rejected_configs.get(),
        0,
        "a mismatch is no rejection"
    );
    let dir = edge.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn idle_and_oversized_streams_reconnect() -> anyhow::Result<()> {
    let fake = FakeControlPlane::start().await?;
    let quiet = fake.stream();
    let oversized = fake.stream();
    let mut s = settings(&fake.url())?;
    s.idle_timeout = Duration::from_millis(300);
    s.max_line = 1024;
    let edge = Running::start(data_dir(), s, &plain_tls()?)?;
    quiet.frame(&snapshot(1, vec![host("a.example.com")], vec![]))?;
    // Then silence: the idle timeout ends the stream.
    eventually("a second request", || {
        (fake.config_requests().len() >= 2).then_some(())
    })
    .await?;
    oversized.raw(vec![b'x'; 2048])?;
    eventually("a third request", || {
        (fake.config_requests().len() >= 3).then_some(())
    })
    .await?;
    let resumed = fake.stream();
    resumed.frame(&delta(1, 2, vec![upsert("b.example.com")]))?;
    eventually("version 2", || (edge.version() == 2).then_some(())).await?;
    assert!(sinces(&fake, 1).iter().all(|s| s.as_deref() == Some("1")));
    assert!(edge.edge.metrics.stream_reconnects.get() >= 2);
    drop((quiet, oversized));
    let dir = edge.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn a_restarted_edge_serves_from_disk_while_the_control_plane_is_down() -> anyhow::Result<()> {
    let fake = FakeControlPlane::start().await?;
    let feed = fake.stream();
    let first = Running::plain(&fake)?;
    feed.frame(&snapshot(
        1,
        vec![host("a.example.com")],
        vec![cert(&["a.example.com"])?],
    ))?;
    feed.frame(&delta(1, 2, vec![upsert("b.example.com")]))?;
    eventually("version 2", || (first.version() == 2).then_some(())).await?;
    let url = fake.url();
    drop((feed, fake));
    // The control plane is gone: reconnects fail, the table stays.
    let metrics = &first.edge.metrics;
    eventually("failed reconnects", || {
        (metrics.stream_reconnects.get() >= 3 && metrics.stream_connected.get() == 0).then_some(())
    })
    .await?;
    assert!(first.routes("a.example.com") && first.routes("b.example.com"));
    let dir = first.stop().await?;

    // A new process on the same data dir, the control plane still down.
    let second = Running::start(dir, settings(&url)?, &plain_tls()?)?;
    assert_eq!(second.version(), 2);
    assert!(second.routes("a.example.com") && second.routes("b.example.com"));
    assert!(second.edge.table().certificate("a.example.com").is_some());
    let dir = second.stop().await?;

    // And when the control plane is back, it resumes from version 2.
    let fake = FakeControlPlane::start().await?;
    let resumed = fake.stream();
    resumed.frame(&delta(2, 3, vec![upsert("c.example.com")]))?;
    let third = Running::start(dir, settings(&fake.url())?, &plain_tls()?)?;
    eventually("version 3", || (third.version() == 3).then_some(())).await?;
    assert_eq!(sinces(&fake, 0)[0].as_deref(), Some("2"));
    let dir = third.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn the_stream_works_over_https_with_a_private_ca() -> anyhow::Result<()> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
    let key = rcgen::KeyPair::generate()?;
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&key, &ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
    let fake = FakeControlPlane::start_with(Some(Arc::new(server))).await?;
    let dir = data_dir();
    std::fs::create_dir_all(&dir)?;
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem())?;
    let tls = outbound::tls_config(&Trust {
        system_roots: true,
        ca_file: Some(ca_file),
    })?;
    let url = format!("https://{}", fake.addr);
    let feed = fake.stream();
    feed.frame(&snapshot(4, vec![host("a.example.com")], vec![]))?;
    let edge = Running::start(dir, settings(&url)?, &tls)?;
    eventually("version 4 over TLS", || (edge.version() == 4).then_some(())).await?;
    eventually("a heartbeat over TLS", || {
        fake.heartbeats()
            .into_iter()
            .find(|h| h.applied_version == ConfigVersion(4))
    })
    .await?;
    let dir = edge.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
