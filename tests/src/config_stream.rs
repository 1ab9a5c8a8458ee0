//! Reading the control plane's config stream the way an edge does, for
//! tests: NDJSON lines decoded with the protocol crate, a chunked snapshot
//! assembled, each read bounded by a deadline.

use anyhow::Context;
use futures::StreamExt;
use portico_protocol::{CertificateBundle, Frame, Snapshot, decode_frame};
use std::time::Duration;

pub struct ConfigReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl ConfigReader {
    /// Opens `GET {base}/internal/v1/edge/config[?since=V]`; fails on non-200.
    pub async fn open(base: &str, token: &str, since: Option<u64>) -> anyhow::Result<Self> {
        let url = match since {
            Some(v) => format!("{base}/internal/v1/edge/config?since={v}"),
            None => format!("{base}/internal/v1/edge/config"),
        };
        let resp = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status() == 200,
            "config stream: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
        Ok(ConfigReader {
            body: resp.bytes_stream().boxed(),
            buf: Vec::new(),
        })
    }

    /// The next frame, waiting at most `wait`.
    pub async fn next(&mut self, wait: Duration) -> anyhow::Result<Frame> {
        tokio::time::timeout(wait, self.next_inner())
            .await
            .context("no frame in time")?
    }

    async fn next_inner(&mut self) -> anyhow::Result<Frame> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(decode_frame(&line)?);
            }
            let chunk = self.body.next().await.context("stream ended")??;
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// The next frame that is not a keep-alive.
    pub async fn next_change(&mut self, wait: Duration) -> anyhow::Result<Frame> {
        loop {
            match self.next(wait).await? {
                Frame::KeepAlive { .. } => continue,
                other => return Ok(other),
            }
        }
    }

    /// Reads a whole snapshot (single frame or begin, chunks, end), checking
    /// the end frame's counts.
    pub async fn snapshot(&mut self, wait: Duration) -> anyhow::Result<Snapshot> {
        let begin = match self.next_change(wait).await? {
            Frame::Snapshot(s) => return Ok(s),
            Frame::SnapshotBegin(b) => b,
            other => anyhow::bail!("expected a snapshot, got {other:?}"),
        };
        let mut s = Snapshot {
            v: begin.v,
            version: begin.version,
            hosts: Vec::new(),
            certificates: Vec::new(),
            challenges: Vec::new(),
            settings: begin.settings,
        };
        loop {
            match self.next(wait).await? {
                Frame::SnapshotChunk(c) => {
                    s.hosts.extend(c.hosts);
                    s.certificates.extend(c.certificates);
                    s.challenges.extend(c.challenges);
                }
                Frame::SnapshotEnd(e) => {
                    anyhow::ensure!(e.version == s.version, "end version differs");
                    anyhow::ensure!(e.hosts as usize == s.hosts.len(), "host count differs");
                    anyhow::ensure!(
                        e.certificates as usize == s.certificates.len(),
                        "certificate count differs"
                    );
                    return Ok(s);
                }
                other => anyhow::bail!("unexpected frame inside a snapshot: {other:?}"),
            }
        }
    }
}

/// Stores a certificate for `hostname` straight into the database, the way
/// the issuer will (the control plane does not re-validate it: edges do).
pub async fn store_certificate(
    database_url: &str,
    hostname: &str,
    bundle: &CertificateBundle,
) -> anyhow::Result<Option<u64>> {
    use portico_control_plane::db;
    let keys = portico_control_plane::crypto::Keyring::parse(crate::cluster::ENCRYPTION_KEYS)
        .map_err(anyhow::Error::msg)?;
    let pool = sqlx::PgPool::connect(database_url).await?;
    let mut tx = pool.begin().await?;
    let domain_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM domains WHERE hostname = $1")
        .bind(hostname)
        .fetch_one(&mut *tx)
        .await
        .with_context(|| format!("no domain {hostname}"))?;
    let version = db::certificates::upsert(
        &mut tx,
        &keys,
        &db::certificates::NewCertificate {
            domain_id,
            hostname,
            chain_pem: &bundle.chain_pem,
            key_pem: &bundle.key_pem,
            not_after: chrono::DateTime::from_timestamp(bundle.not_after, 0)
                .context("not_after")?,
            issuer: "unknown",
            not_before: None,
            renew_at: None,
            ari_id: None,
            ari_window: None,
        },
    )
    .await?;
    tx.commit().await?;
    pool.close().await;
    Ok(version)
}
