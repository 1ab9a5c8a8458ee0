//! The global config version and its change log (see the migration
//! `config_distribution` for the model). [`publish`] is called inside the
//! transaction of every change edges must know, as its last statement: it
//! takes the `config_state` row lock (so versions commit in order), logs the
//! touched keys and queues a `NOTIFY` that is delivered at commit.

use sqlx::{PgConnection, PgExecutor};

/// The Postgres channel that carries new config versions.
pub const CHANNEL: &str = "portico_config";

/// Something an edge caches, by the name it is logged under.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConfigKey {
    /// The routing of one hostname.
    Host(String),
    /// The certificate served for one hostname.
    Certificate(String),
    /// An ACME challenge answer, by id (`http01:<token>`, `tls_alpn01:<hostname>`).
    Challenge(String),
}

impl ConfigKey {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            ConfigKey::Host(h) => ("host", h),
            ConfigKey::Certificate(h) => ("certificate", h),
            ConfigKey::Challenge(id) => ("challenge", id),
        }
    }

    /// Both keys of a hostname: what a domain's creation, deletion or state
    /// change may touch.
    pub fn both(hostname: &str) -> [ConfigKey; 2] {
        [
            ConfigKey::Host(hostname.to_string()),
            ConfigKey::Certificate(hostname.to_string()),
        ]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigState {
    pub version: u64,
    /// Deltas can start at any version `>= log_floor`.
    pub log_floor: u64,
}

/// Bumps the version and logs `keys` under it; returns the new version.
/// Does nothing (and returns `None`) when `keys` is empty.
pub async fn publish(
    tx: &mut PgConnection,
    keys: &[ConfigKey],
) -> Result<Option<u64>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(None);
    }
    let version = sqlx::query_scalar!(
        "UPDATE config_state SET version = version + 1, updated_at = now() RETURNING version"
    )
    .fetch_one(&mut *tx)
    .await?;
    let (kinds, names): (Vec<&str>, Vec<&str>) = keys.iter().map(ConfigKey::parts).unzip();
    sqlx::query!(
        "INSERT INTO config_changes (version, kind, key)
         SELECT $1, k, n FROM UNNEST($2::text[], $3::text[]) AS u(k, n)
         ON CONFLICT DO NOTHING",
        version,
        &kinds as &[&str],
        &names as &[&str]
    )
    .execute(&mut *tx)
    .await?;
    notify(&mut *tx, version).await?;
    Ok(Some(as_u64(version)))
}

/// Logs both keys of every domain of a tenant (suspension, reinstatement).
pub async fn publish_tenant(tx: &mut PgConnection, tenant: uuid::Uuid) -> Result<u64, sqlx::Error> {
    let version = sqlx::query_scalar!(
        "UPDATE config_state SET version = version + 1, updated_at = now() RETURNING version"
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO config_changes (version, kind, key)
         SELECT $1, k.kind, d.hostname FROM domains d
         CROSS JOIN (VALUES ('host'), ('certificate')) AS k(kind)
         WHERE d.tenant_id = $2
         ON CONFLICT DO NOTHING",
        version,
        tenant
    )
    .execute(&mut *tx)
    .await?;
    notify(&mut *tx, version).await?;
    Ok(as_u64(version))
}

async fn notify(tx: &mut PgConnection, version: i64) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_notify($1, $2)", CHANNEL, version.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub async fn state(db: impl PgExecutor<'_>) -> Result<ConfigState, sqlx::Error> {
    let row = sqlx::query!("SELECT version, log_floor FROM config_state")
        .fetch_one(db)
        .await?;
    Ok(ConfigState {
        version: as_u64(row.version),
        log_floor: as_u64(row.log_floor),
    })
}

/// Distinct keys changed in `(since, upto]`, at most `limit` of them.
pub async fn changed_keys(
    db: impl PgExecutor<'_>,
    since: u64,
    upto: u64,
    limit: i64,
) -> Result<Vec<ConfigKey>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT DISTINCT kind, key FROM config_changes
         WHERE version > $1 AND version <= $2 LIMIT $3",
        as_i64(since),
        as_i64(upto),
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| match r.kind.as_str() {
            "host" => Some(ConfigKey::Host(r.key)),
            "certificate" => Some(ConfigKey::Certificate(r.key)),
            "challenge" => Some(ConfigKey::Challenge(r.key)),
            _ => None,
        })
        .collect())
}

/// What [`compact`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compaction {
    pub superseded: u64,
    pub expired: u64,
    pub log_floor: u64,
}

/// Deletes rows superseded by a later row for the same key (no delta
/// changes), then rows older than both retention limits (edges behind them
/// get a snapshot), and raises `log_floor` to match. One replica at a time
/// (a transaction-scoped advisory lock); the others skip that round.
pub async fn compact(
    db: &sqlx::PgPool,
    retain_versions: u64,
    retain_secs: f64,
) -> Result<Compaction, sqlx::Error> {
    let mut tx = db.begin().await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock(hashtext('portico_config_compaction')) AS "locked!""#
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(Compaction::default());
    }
    let superseded = sqlx::query!(
        "DELETE FROM config_changes c USING config_changes later
         WHERE later.kind = c.kind AND later.key = c.key AND later.version > c.version"
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let floor = sqlx::query_scalar!(
        r#"UPDATE config_state SET log_floor = GREATEST(log_floor, COALESCE((
              SELECT max(version) FROM config_changes
              WHERE version <= (SELECT version FROM config_state) - $1
                AND created_at < now() - make_interval(secs => $2)), 0))
           RETURNING log_floor"#,
        as_i64(retain_versions),
        retain_secs
    )
    .fetch_one(&mut *tx)
    .await?;
    let expired = sqlx::query!("DELETE FROM config_changes WHERE version <= $1", floor)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(Compaction {
        superseded,
        expired,
        log_floor: as_u64(floor),
    })
}

pub fn as_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
