//! What edges are allowed to serve, read for snapshots and deltas: hosts of
//! active tenants whose domain is not being deleted, and their certificates.
//! On-demand issuance is allowed only for verified (`active`) domains.

use futures::Stream;
use sqlx::PgConnection;
use uuid::Uuid;

/// A servable host, as the edge needs it.
#[derive(Clone, Debug)]
pub struct HostRow {
    pub hostname: String,
    pub targets: Vec<String>,
    pub target_tls: bool,
    pub keep_host: bool,
    pub redirects: Vec<String>,
    pub on_demand: bool,
}

/// A servable certificate, key still sealed.
#[derive(Clone, Debug)]
pub struct CertRow {
    pub domain_id: Uuid,
    pub hostname: String,
    pub names: Vec<String>,
    pub chain_pem: String,
    pub key_id: String,
    pub key_sealed: Vec<u8>,
    pub not_after: chrono::DateTime<chrono::Utc>,
}

/// Every servable host, streamed.
pub fn all_hosts(
    conn: &mut PgConnection,
) -> impl Stream<Item = Result<HostRow, sqlx::Error>> + Send + '_ {
    sqlx::query_as!(
        HostRow,
        r#"SELECT d.hostname, d.targets, d.target_tls, d.keep_host, d.redirects,
                  (d.tls_on_demand AND d.status = 'active') AS "on_demand!"
           FROM domains d JOIN tenants t ON t.id = d.tenant_id
           WHERE t.status = 'active' AND d.status <> 'deleting'"#
    )
    .fetch(conn)
}

/// The servable hosts among `hostnames`; absent ones are to be removed.
pub async fn hosts_named(
    conn: &mut PgConnection,
    hostnames: &[String],
) -> Result<Vec<HostRow>, sqlx::Error> {
    sqlx::query_as!(
        HostRow,
        r#"SELECT d.hostname, d.targets, d.target_tls, d.keep_host, d.redirects,
                  (d.tls_on_demand AND d.status = 'active') AS "on_demand!"
           FROM domains d JOIN tenants t ON t.id = d.tenant_id
           WHERE t.status = 'active' AND d.status <> 'deleting' AND d.hostname = ANY($1)"#,
        hostnames
    )
    .fetch_all(conn)
    .await
}

/// Every servable certificate, streamed.
pub fn all_certificates(
    conn: &mut PgConnection,
) -> impl Stream<Item = Result<CertRow, sqlx::Error>> + Send + '_ {
    sqlx::query_as!(
        CertRow,
        "SELECT c.domain_id, d.hostname, c.names, c.chain_pem, c.key_id, c.key_sealed, c.not_after
         FROM certificates c JOIN domains d ON d.id = c.domain_id JOIN tenants t ON t.id = d.tenant_id
         WHERE t.status = 'active' AND d.status <> 'deleting'"
    )
    .fetch(conn)
}

/// The servable certificates of `hostnames`.
pub async fn certificates_named(
    conn: &mut PgConnection,
    hostnames: &[String],
) -> Result<Vec<CertRow>, sqlx::Error> {
    sqlx::query_as!(
        CertRow,
        "SELECT c.domain_id, d.hostname, c.names, c.chain_pem, c.key_id, c.key_sealed, c.not_after
         FROM certificates c JOIN domains d ON d.id = c.domain_id JOIN tenants t ON t.id = d.tenant_id
         WHERE t.status = 'active' AND d.status <> 'deleting' AND d.hostname = ANY($1)",
        hostnames
    )
    .fetch_all(conn)
    .await
}

/// A challenge answer, key still sealed.
#[derive(Clone, Debug)]
pub struct ChallengeRow {
    pub id: String,
    pub kind: String,
    pub token: Option<String>,
    pub key_authorization: Option<String>,
    pub hostname: Option<String>,
    pub certificate_pem: Option<String>,
    pub key_id: Option<String>,
    pub key_sealed: Option<Vec<u8>>,
}

/// Every challenge answer being served (few: only pending orders).
pub async fn all_challenges(conn: &mut PgConnection) -> Result<Vec<ChallengeRow>, sqlx::Error> {
    sqlx::query_as!(
        ChallengeRow,
        "SELECT id, kind, token, key_authorization, hostname, certificate_pem, key_id, key_sealed
         FROM challenges"
    )
    .fetch_all(conn)
    .await
}

/// The challenge answers among `ids`; absent ones are to be removed.
pub async fn challenges_named(
    conn: &mut PgConnection,
    ids: &[String],
) -> Result<Vec<ChallengeRow>, sqlx::Error> {
    sqlx::query_as!(
        ChallengeRow,
        "SELECT id, kind, token, key_authorization, hostname, certificate_pem, key_id, key_sealed
         FROM challenges WHERE id = ANY($1)",
        ids
    )
    .fetch_all(conn)
    .await
}
