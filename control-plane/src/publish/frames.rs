//! Building the frames edges receive: a full snapshot (streamed in chunks
//! from one repeatable-read transaction, so it is exactly one version) and
//! deltas ("every key changed after V, as it is now", also one transaction).

use crate::crypto::Keyring;
use crate::db::config::{self, ConfigKey};
use crate::db::published::{self, CertRow, ChallengeRow, HostRow};
use crate::settings::Settings;
use bytes::Bytes;
use futures::TryStreamExt;
use portico_protocol::{
    CertificateBundle, ChallengeAnswer, ChallengeId, Change, ConfigVersion, Delta, EdgeSettings,
    Frame, HostConfig, PROTOCOL_VERSION, Redirect, SnapshotBegin, SnapshotChunk, SnapshotEnd,
    encode_frame,
};
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeSet;
use tokio::sync::mpsc;

/// Hosts or certificates per snapshot chunk frame.
const CHUNK: usize = 1_000;
/// A delta touching more keys than this is sent as a snapshot instead.
pub const MAX_DELTA_KEYS: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("encoding a frame: {0}")]
    Encode(String),
    /// The edge went away while we were writing.
    #[error("the edge disconnected")]
    Closed,
}

pub enum DeltaOutcome {
    /// The edge has the current version.
    UpToDate,
    /// The edge is older than the log's floor (or ahead of us, or the delta
    /// would be huge): send a snapshot.
    NeedSnapshot,
    Delta {
        to: u64,
        frame: Bytes,
    },
}

/// The edge-wide settings every snapshot carries.
pub fn edge_settings(_settings: &Settings) -> EdgeSettings {
    EdgeSettings::default()
}

/// Streams a full snapshot into `out` as begin, chunks, end; returns its version.
pub async fn snapshot(
    pool: &PgPool,
    settings: &Settings,
    out: &mpsc::Sender<Bytes>,
) -> Result<u64, FrameError> {
    let mut tx = pool.begin().await?;
    read_only_snapshot(&mut tx).await?;
    let state = config::state(&mut *tx).await?;
    let version = ConfigVersion(state.version);
    send(
        out,
        &Frame::SnapshotBegin(SnapshotBegin {
            v: PROTOCOL_VERSION,
            version,
            settings: edge_settings(settings),
        }),
    )
    .await?;
    let mut counts = SnapshotEnd {
        v: PROTOCOL_VERSION,
        version,
        hosts: 0,
        certificates: 0,
        challenges: 0,
    };
    {
        let mut rows = published::all_hosts(&mut tx);
        let mut batch = Vec::with_capacity(CHUNK);
        while let Some(row) = rows.try_next().await? {
            batch.push(host_config(row));
            if batch.len() == CHUNK {
                counts.hosts += send_chunk(out, std::mem::take(&mut batch), Vec::new()).await?;
            }
        }
        counts.hosts += send_chunk(out, batch, Vec::new()).await?;
    }
    {
        let mut rows = published::all_certificates(&mut tx);
        let mut batch = Vec::with_capacity(CHUNK);
        while let Some(row) = rows.try_next().await? {
            batch.extend(bundle(row, &settings.encryption_keys));
            if batch.len() == CHUNK {
                counts.certificates +=
                    send_chunk(out, Vec::new(), std::mem::take(&mut batch)).await?;
            }
        }
        counts.certificates += send_chunk(out, Vec::new(), batch).await?;
    }
    let challenges: Vec<ChallengeAnswer> = published::all_challenges(&mut tx)
        .await?
        .into_iter()
        .filter_map(|row| challenge(row, &settings.encryption_keys))
        .collect();
    counts.challenges = u64::try_from(challenges.len()).unwrap_or(0);
    if !challenges.is_empty() {
        send(
            out,
            &Frame::SnapshotChunk(SnapshotChunk {
                v: PROTOCOL_VERSION,
                hosts: Vec::new(),
                certificates: Vec::new(),
                challenges,
            }),
        )
        .await?;
    }
    tx.commit().await?;
    send(out, &Frame::SnapshotEnd(counts)).await?;
    Ok(state.version)
}

/// The delta from `since` to the current version.
pub async fn delta(
    pool: &PgPool,
    settings: &Settings,
    since: u64,
) -> Result<DeltaOutcome, FrameError> {
    let mut tx = pool.begin().await?;
    read_only_snapshot(&mut tx).await?;
    let state = config::state(&mut *tx).await?;
    if since == state.version {
        return Ok(DeltaOutcome::UpToDate);
    }
    if since < state.log_floor || since > state.version {
        return Ok(DeltaOutcome::NeedSnapshot);
    }
    let keys = config::changed_keys(&mut *tx, since, state.version, MAX_DELTA_KEYS + 1).await?;
    if keys.len() > usize::try_from(MAX_DELTA_KEYS).unwrap_or(usize::MAX) {
        return Ok(DeltaOutcome::NeedSnapshot);
    }
    let changes = resolve(&mut tx, &settings.encryption_keys, keys).await?;
    tx.commit().await?;
    let frame = encode(&Frame::Delta(Delta {
        v: PROTOCOL_VERSION,
        from: ConfigVersion(since),
        to: ConfigVersion(state.version),
        changes,
    }))?;
    Ok(DeltaOutcome::Delta {
        to: state.version,
        frame,
    })
}

/// Each changed key as it is now: an upsert if it is still servable, a
/// removal otherwise. Hosts first, then certificates, each sorted.
async fn resolve(
    conn: &mut PgConnection,
    keyring: &Keyring,
    keys: Vec<ConfigKey>,
) -> Result<Vec<Change>, FrameError> {
    let mut hosts = BTreeSet::new();
    let mut certs = BTreeSet::new();
    let mut challenges = BTreeSet::new();
    for key in keys {
        match key {
            ConfigKey::Host(h) => hosts.insert(h),
            ConfigKey::Certificate(h) => certs.insert(h),
            ConfigKey::Challenge(id) => challenges.insert(id),
        };
    }
    let hosts: Vec<String> = hosts.into_iter().collect();
    let certs: Vec<String> = certs.into_iter().collect();
    let mut found: std::collections::HashMap<String, HostRow> =
        published::hosts_named(&mut *conn, &hosts)
            .await?
            .into_iter()
            .map(|r| (r.hostname.clone(), r))
            .collect();
    let mut changes = Vec::with_capacity(hosts.len() + certs.len());
    for h in hosts {
        changes.push(match found.remove(&h) {
            Some(row) => Change::UpsertHost {
                host: host_config(row),
            },
            None => Change::RemoveHost { hostname: h },
        });
    }
    let mut found: std::collections::HashMap<String, CertRow> =
        published::certificates_named(&mut *conn, &certs)
            .await?
            .into_iter()
            .map(|r| (r.hostname.clone(), r))
            .collect();
    for h in certs {
        match found.remove(&h).and_then(|row| bundle(row, keyring)) {
            Some(certificate) => changes.push(Change::UpsertCertificate { certificate }),
            None => changes.push(Change::RemoveCertificate { names: vec![h] }),
        }
    }
    let ids: Vec<String> = challenges.into_iter().collect();
    let mut found: std::collections::HashMap<String, ChallengeRow> =
        published::challenges_named(&mut *conn, &ids)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
    for id in ids {
        match found.remove(&id).and_then(|row| challenge(row, keyring)) {
            Some(challenge) => changes.push(Change::AddChallenge { challenge }),
            None => changes.extend(challenge_id(&id).map(|id| Change::RemoveChallenge { id })),
        }
    }
    Ok(changes)
}

/// Snapshot reads see one consistent version: the `config_state` row and
/// every domain row as of the same instant.
async fn read_only_snapshot(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(conn)
        .await?;
    Ok(())
}

pub fn host_config(row: HostRow) -> HostConfig {
    let mut host = HostConfig::new(row.hostname);
    host.targets = row.targets;
    host.target_tls = row.target_tls;
    host.keep_host = row.keep_host;
    host.on_demand_tls = row.on_demand;
    host.redirects = row
        .redirects
        .iter()
        .map(|r| match r.as_str() {
            "to_https" => Redirect::ToHttps,
            "www_to_apex" => Redirect::WwwToApex,
            "apex_to_www" => Redirect::ApexToWww,
            _ => Redirect::Unknown,
        })
        .collect();
    host
}

/// The bundle with its key opened; `None` (logged) if the key can't be
/// opened, so one bad row never stops a snapshot.
pub fn bundle(row: CertRow, keyring: &Keyring) -> Option<CertificateBundle> {
    match keyring.open(&row.key_id, &row.key_sealed, row.domain_id.as_bytes()) {
        Ok(key) => Some(CertificateBundle {
            names: row.names,
            chain_pem: row.chain_pem,
            key_pem: String::from_utf8_lossy(key.expose()).into_owned(),
            not_after: row.not_after.timestamp(),
        }),
        Err(e) => {
            tracing::error!(host = %row.hostname, error = %e, "certificate key cannot be opened; not published");
            None
        }
    }
}

/// The answer as the edge serves it; `None` (logged) if it can't be built.
pub fn challenge(row: ChallengeRow, keyring: &Keyring) -> Option<ChallengeAnswer> {
    let kind = row.kind.clone();
    match (kind.as_str(), row) {
        (
            "http01",
            ChallengeRow {
                token: Some(token),
                key_authorization: Some(key_authorization),
                ..
            },
        ) => Some(ChallengeAnswer::Http01 {
            token,
            key_authorization,
        }),
        (
            "tls_alpn01",
            ChallengeRow {
                id,
                hostname: Some(hostname),
                certificate_pem: Some(certificate_pem),
                key_id: Some(key_id),
                key_sealed: Some(sealed),
                ..
            },
        ) => match keyring.open(&key_id, &sealed, id.as_bytes()) {
            Ok(key) => Some(ChallengeAnswer::TlsAlpn01 {
                hostname,
                certificate_pem,
                key_pem: String::from_utf8_lossy(key.expose()).into_owned(),
            }),
            Err(e) => {
                tracing::error!(challenge = %id, error = %e, "challenge key cannot be opened");
                None
            }
        },
        (kind, row) => {
            tracing::error!(challenge = %row.id, kind, "malformed challenge row");
            None
        }
    }
}

/// The protocol id of a challenge row id.
fn challenge_id(id: &str) -> Option<ChallengeId> {
    match id.split_once(':') {
        Some(("http01", token)) => Some(ChallengeId::Http01 {
            token: token.to_string(),
        }),
        Some(("tls_alpn01", hostname)) => Some(ChallengeId::TlsAlpn01 {
            hostname: hostname.to_string(),
        }),
        _ => None,
    }
}

async fn send_chunk(
    out: &mpsc::Sender<Bytes>,
    hosts: Vec<HostConfig>,
    certificates: Vec<CertificateBundle>,
) -> Result<u64, FrameError> {
    let n = u64::try_from(hosts.len() + certificates.len()).unwrap_or(0);
    if n > 0 {
        send(
            out,
            &Frame::SnapshotChunk(SnapshotChunk {
                v: PROTOCOL_VERSION,
                hosts,
                certificates,
                challenges: Vec::new(),
            }),
        )
        .await?;
    }
    Ok(n)
}

pub async fn send(out: &mpsc::Sender<Bytes>, frame: &Frame) -> Result<(), FrameError> {
    out.send(encode(frame)?)
        .await
        .map_err(|_| FrameError::Closed)
}

pub fn encode(frame: &Frame) -> Result<Bytes, FrameError> {
    encode_frame(frame)
        .map(Bytes::from)
        .map_err(|e| FrameError::Encode(e.to_string()))
}
