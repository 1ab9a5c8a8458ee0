//! Read queries of the ops dashboard (`crate::ops`): every list is bounded
//! and served by an index; the one full pass is the domain count by status.
//! Runs and steps come back as `db::repairs` records (that module owns
//! them; this one adds the dashboard's orderings and filters).
//! Job queues are read from apalis's own table (read only; `jobs/` is the
//! only module that writes it).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Lists shown on the overview stop here.
pub const LIST_LIMIT: i64 = 50;

/// One edge with its traffic over the last `window` seconds and its failing checks.
#[derive(Clone, Debug)]
pub struct EdgeSummary {
    pub id: Uuid,
    pub name: String,
    pub region: String,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub applied_version: Option<i64>,
    pub build: Option<String>,
    pub requests: i64,
    pub errors: i64,
    /// Check kinds (`edge_unreachable`, ...) now failing.
    pub failing: Vec<String>,
    pub failing_detail: String,
}

pub async fn edges(
    db: impl PgExecutor<'_>,
    window_secs: f64,
) -> Result<Vec<EdgeSummary>, sqlx::Error> {
    sqlx::query_as!(
        EdgeSummary,
        r#"SELECT e.id, e.name, e.region, e.last_seen_at, e.applied_version, e.build,
                  t.requests AS "requests!", t.errors AS "errors!",
                  COALESCE(h.failing, '{}') AS "failing!", COALESCE(h.detail, '') AS "failing_detail!"
           FROM edges e
           CROSS JOIN LATERAL (
               SELECT COALESCE(sum(w.requests), 0)::bigint AS requests,
                      COALESCE(sum(w.status_5xx), 0)::bigint AS errors
               FROM traffic_windows w
               WHERE w.edge_id = e.id AND w.window_start > now() - make_interval(secs => $1)) t
           LEFT JOIN LATERAL (
               SELECT array_agg(s.kind ORDER BY s.kind) AS failing,
                      string_agg(s.last_detail, '; ' ORDER BY s.kind) AS detail
               FROM health_states s
               WHERE s.subject_kind = 'edge' AND s.subject_id = e.id AND s.failing) h ON true
           WHERE e.revoked_at IS NULL
           ORDER BY e.name
           LIMIT 500"#,
        window_secs
    )
    .fetch_all(db)
    .await
}

pub async fn edge(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<super::edges::EdgeRecord>, sqlx::Error> {
    sqlx::query_as!(
        super::edges::EdgeRecord,
        "SELECT id, name, region, created_at, last_seen_at, applied_version, build,
                uptime_secs, hosts, certificates, counters, rejection
         FROM edges WHERE id = $1 AND revoked_at IS NULL",
        id
    )
    .fetch_optional(db)
    .await
}

#[derive(Clone, Debug)]
pub struct StatusCount {
    pub status: String,
    pub tls_status: String,
    pub n: i64,
}

/// Domains by (status, TLS status): the overview's one full pass.
pub async fn domain_counts(db: impl PgExecutor<'_>) -> Result<Vec<StatusCount>, sqlx::Error> {
    sqlx::query_as!(
        StatusCount,
        r#"SELECT status, tls_status, count(*) AS "n!" FROM domains
           GROUP BY status, tls_status ORDER BY status, tls_status"#
    )
    .fetch_all(db)
    .await
}

#[derive(Clone, Debug)]
pub struct Expiring {
    pub domain_id: Uuid,
    pub hostname: String,
    pub not_after: DateTime<Utc>,
}

/// Certificates expiring within `days`, soonest first (index `certificates_not_after`).
pub async fn expiring(db: impl PgExecutor<'_>, days: f64) -> Result<Vec<Expiring>, sqlx::Error> {
    sqlx::query_as!(
        Expiring,
        "SELECT c.domain_id, d.hostname, c.not_after
         FROM certificates c JOIN domains d ON d.id = c.domain_id
         WHERE c.not_after < now() + make_interval(days => $1::float8::int)
         ORDER BY c.not_after LIMIT $2",
        days,
        LIST_LIMIT
    )
    .fetch_all(db)
    .await
}

#[derive(Clone, Debug)]
pub struct QueueStats {
    pub queue: String,
    pub pending: i64,
    pub running: i64,
    pub failed: i64,
    /// Seconds the oldest due, pending job has waited.
    pub oldest_pending_secs: Option<f64>,
}

/// Per-queue job counts from apalis's table; finished jobs are not counted.
/// Pending includes `Queued` (claimed by a worker's buffer, not started).
pub async fn queues(db: impl PgExecutor<'_>) -> Result<Vec<QueueStats>, sqlx::Error> {
    sqlx::query_as!(
        QueueStats,
        r#"SELECT job_type AS "queue!",
                  count(*) FILTER (WHERE status IN ('Pending', 'Queued')) AS "pending!",
                  count(*) FILTER (WHERE status = 'Running') AS "running!",
                  count(*) FILTER (WHERE status IN ('Failed', 'Killed')) AS "failed!",
                  EXTRACT(EPOCH FROM now() - min(run_at) FILTER (WHERE status IN ('Pending', 'Queued') AND run_at <= now()))::float8
                      AS oldest_pending_secs
           FROM apalis.jobs WHERE status IN ('Pending', 'Queued', 'Running', 'Failed', 'Killed')
           GROUP BY job_type ORDER BY job_type LIMIT 100"#
    )
    .fetch_all(db)
    .await
}

/// What the repairs page filters on; `None` matches everything.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub status: Option<String>,
    pub kind: Option<String>,
    /// A subject's name (edge name, hostname) or id.
    pub subject: Option<String>,
}

/// Runs, unfinished ones first, newest first (index `repair_runs_listing`).
pub async fn runs(
    db: impl PgExecutor<'_>,
    filter: &RunFilter,
    limit: i64,
) -> Result<Vec<super::repairs::RunRecord>, sqlx::Error> {
    sqlx::query_as!(
        super::repairs::RunRecord,
        "SELECT * FROM repair_runs
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR kind = $2)
           AND ($3::text IS NULL OR subject_name = $3 OR subject_id::text = $3)
         ORDER BY (status <> 'closed') DESC, id DESC LIMIT $4",
        filter.status,
        filter.kind,
        filter.subject,
        limit
    )
    .fetch_all(db)
    .await
}

/// Runs not closed yet, newest first.
pub async fn open_runs(
    db: impl PgExecutor<'_>,
) -> Result<Vec<super::repairs::RunRecord>, sqlx::Error> {
    sqlx::query_as!(
        super::repairs::RunRecord,
        "SELECT * FROM repair_runs WHERE status <> 'closed'
         ORDER BY (status <> 'closed') DESC, id DESC LIMIT $1",
        LIST_LIMIT
    )
    .fetch_all(db)
    .await
}

/// Requests and 5xx in one window, all edges (or all hosts of one edge) added up.
#[derive(Clone, Debug)]
pub struct TrafficPoint {
    pub window_start: DateTime<Utc>,
    pub requests: i64,
    pub errors: i64,
}

/// One domain's traffic over the last `secs` (index `traffic_windows_domain`).
pub async fn domain_traffic(
    db: impl PgExecutor<'_>,
    domain: Uuid,
    secs: f64,
) -> Result<Vec<TrafficPoint>, sqlx::Error> {
    sqlx::query_as!(
        TrafficPoint,
        r#"SELECT window_start, sum(requests)::bigint AS "requests!", sum(status_5xx)::bigint AS "errors!"
           FROM traffic_windows
           WHERE domain_id = $1 AND window_start > now() - make_interval(secs => $2)
           GROUP BY window_start ORDER BY window_start LIMIT 1000"#,
        domain,
        secs
    )
    .fetch_all(db)
    .await
}

/// One edge's traffic over the last `secs` (index `traffic_windows_edge`).
pub async fn edge_traffic(
    db: impl PgExecutor<'_>,
    edge: Uuid,
    secs: f64,
) -> Result<Vec<TrafficPoint>, sqlx::Error> {
    sqlx::query_as!(
        TrafficPoint,
        r#"SELECT window_start, sum(requests)::bigint AS "requests!", sum(status_5xx)::bigint AS "errors!"
           FROM traffic_windows
           WHERE edge_id = $1 AND window_start > now() - make_interval(secs => $2)
           GROUP BY window_start ORDER BY window_start LIMIT 1000"#,
        edge,
        secs
    )
    .fetch_all(db)
    .await
}

#[derive(Clone, Debug)]
pub struct DomainDetail {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub hostname: String,
    pub targets: Vec<String>,
    pub status: String,
    pub tls_status: String,
    pub dns_diagnosis: Option<serde_json::Value>,
    pub dns_checked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub cert_names: Option<Vec<String>>,
    pub cert_not_after: Option<DateTime<Utc>>,
    pub cert_issued_at: Option<DateTime<Utc>>,
}

/// A domain and its certificate's public facts (never the key).
pub async fn domain(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<DomainDetail>, sqlx::Error> {
    sqlx::query_as!(
        DomainDetail,
        r#"SELECT d.id, d.tenant_id, d.hostname, d.targets, d.status, d.tls_status,
                  d.dns_diagnosis, d.dns_checked_at, d.created_at,
                  c.names AS "cert_names?", c.not_after AS "cert_not_after?",
                  c.created_at AS "cert_issued_at?"
           FROM domains d LEFT JOIN certificates c ON c.domain_id = d.id
           WHERE d.id = $1"#,
        id
    )
    .fetch_optional(db)
    .await
}
