//! Health check state with hysteresis, and the health fan-out's schedule.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// One check's result, as stored.
pub struct CheckResult<'a> {
    pub kind: &'a str,
    pub passed: bool,
    pub detail: &'a str,
    pub data: &'a serde_json::Value,
}

/// What recording a result did to the check's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub failing_before: bool,
    pub failing_after: bool,
}

impl Transition {
    pub fn opened(self) -> bool {
        !self.failing_before && self.failing_after
    }
    pub fn closed(self) -> bool {
        self.failing_before && !self.failing_after
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct HealthState {
    pub subject_kind: String,
    pub subject_id: Uuid,
    pub kind: String,
    pub failing: bool,
    pub consecutive_failures: i32,
    pub consecutive_passes: i32,
    pub checked_at: DateTime<Utc>,
    pub last_passed: bool,
    pub last_detail: String,
    pub changed_at: DateTime<Utc>,
}

/// How long a confirmed, unchanged passing result may go unwritten: a
/// check that passes as before does not rewrite its row (no new row
/// version, no WAL) unless the row is older than this.
pub const REFRESH_SECS: f64 = 300.0;

/// Records the results of one subject's checks in one statement:
/// `failing` turns on after `fail_threshold` consecutive failures and off
/// after `pass_threshold` consecutive passes. A pass that confirms a
/// passing state with the same words is not written again for
/// [`REFRESH_SECS`] (`checked_at` is then when it was last written).
/// Returns each kind's transition, in the order given.
pub async fn record(
    db: impl PgExecutor<'_>,
    subject_kind: &str,
    subject_id: Uuid,
    results: &[CheckResult<'_>],
    fail_threshold: u32,
    pass_threshold: u32,
) -> Result<Vec<Transition>, sqlx::Error> {
    let fail = i32::try_from(fail_threshold).unwrap_or(i32::MAX);
    let pass = i32::try_from(pass_threshold).unwrap_or(i32::MAX);
    let kinds: Vec<&str> = results.iter().map(|r| r.kind).collect();
    let passed: Vec<bool> = results.iter().map(|r| r.passed).collect();
    let details: Vec<&str> = results.iter().map(|r| r.detail).collect();
    let data: Vec<serde_json::Value> = results.iter().map(|r| r.data.clone()).collect();
    let rows = sqlx::query!(
        r#"WITH input AS (
               SELECT * FROM UNNEST($3::text[], $4::bool[], $5::text[], $6::jsonb[])
                   WITH ORDINALITY AS i(kind, passed, detail, data, n)
           ), old AS (
               SELECT h.kind, h.failing FROM health_states h
               WHERE h.subject_kind = $1 AND h.subject_id = $2 AND h.kind = ANY($3)
           ), new AS (
               INSERT INTO health_states AS h (subject_kind, subject_id, kind, failing,
                       consecutive_failures, consecutive_passes, checked_at, last_passed,
                       last_detail, last_data, changed_at)
               SELECT $1, $2, i.kind, NOT i.passed AND 1 >= $7, CASE WHEN i.passed THEN 0 ELSE 1 END,
                      CASE WHEN i.passed THEN 1 ELSE 0 END, now(), i.passed, i.detail, i.data, now()
               FROM input i
               ON CONFLICT (subject_kind, subject_id, kind) DO UPDATE SET
                   consecutive_failures = CASE WHEN EXCLUDED.last_passed THEN 0 ELSE h.consecutive_failures + 1 END,
                   consecutive_passes = CASE WHEN EXCLUDED.last_passed THEN h.consecutive_passes + 1 ELSE 0 END,
                   failing = CASE
                       WHEN NOT EXCLUDED.last_passed AND h.consecutive_failures + 1 >= $7 THEN true
                       WHEN EXCLUDED.last_passed AND h.consecutive_passes + 1 >= $8 THEN false
                       ELSE h.failing END,
                   changed_at = CASE
                       WHEN (NOT EXCLUDED.last_passed AND h.consecutive_failures + 1 >= $7 AND NOT h.failing)
                         OR (EXCLUDED.last_passed AND h.consecutive_passes + 1 >= $8 AND h.failing) THEN now()
                       ELSE h.changed_at END,
                   checked_at = now(), last_passed = EXCLUDED.last_passed,
                   last_detail = EXCLUDED.last_detail, last_data = EXCLUDED.last_data
               WHERE NOT (EXCLUDED.last_passed AND h.last_passed AND NOT h.failing
                          AND h.consecutive_passes >= $8 AND h.last_detail = EXCLUDED.last_detail
                          AND h.checked_at > now() - make_interval(secs => $9))
               RETURNING h.kind, h.failing
           )
           SELECT i.kind AS "kind!", o.failing AS "before?",
                  COALESCE(n.failing, o.failing, false) AS "after!"
           FROM input i LEFT JOIN old o ON o.kind = i.kind LEFT JOIN new n ON n.kind = i.kind
           ORDER BY i.n"#,
        subject_kind,
        subject_id,
        &kinds as &[&str],
        &passed,
        &details as &[&str],
        &data,
        fail,
        pass,
        REFRESH_SECS
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Transition {
            failing_before: r.before.unwrap_or(false),
            failing_after: r.after,
        })
        .collect())
}

/// The check states of one subject (the primary key serves it).
pub async fn for_subject(
    db: impl PgExecutor<'_>,
    subject_kind: &str,
    subject_id: Uuid,
) -> Result<Vec<HealthState>, sqlx::Error> {
    sqlx::query_as!(
        HealthState,
        "SELECT subject_kind, subject_id, kind, failing, consecutive_failures, consecutive_passes,
                checked_at, last_passed, last_detail, changed_at
         FROM health_states WHERE subject_kind = $1 AND subject_id = $2 ORDER BY kind",
        subject_kind,
        subject_id
    )
    .fetch_all(db)
    .await
}

/// Forgets the states of subjects that no longer exist.
pub async fn prune_gone(db: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM health_states h
         WHERE (h.subject_kind = 'domain' AND NOT EXISTS (SELECT 1 FROM domains d WHERE d.id = h.subject_id))
            OR (h.subject_kind = 'edge' AND NOT EXISTS
                   (SELECT 1 FROM edges e WHERE e.id = h.subject_id AND e.revoked_at IS NULL))"
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Claims up to `limit` domains whose health check is due (active, or with
/// DNS gone wrong) and moves each one's next check to the next time its
/// phase comes round: the phase is a hash of its id modulo the interval, so
/// however many domains are added at once, their checks spread evenly over
/// the interval.
pub async fn claim_due_domains(
    db: impl PgExecutor<'_>,
    limit: i64,
    interval: Duration,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let interval_ms = i64::try_from(interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    sqlx::query_scalar!(
        "WITH due AS (
             SELECT id FROM domains
             WHERE status IN ('active', 'misconfigured', 'moved') AND next_health_at <= now()
             ORDER BY next_health_at LIMIT $1 FOR UPDATE SKIP LOCKED
         ), phased AS (
             SELECT id, mod(('x' || substr(md5(id::text), 1, 8))::bit(32)::int8, $2::int8)::float8 AS phase
             FROM due
         )
         UPDATE domains d SET next_health_at = to_timestamp(
             ((floor((extract(epoch FROM now())::float8 * 1000 - p.phase) / $2::float8) + 1) * $2::float8 + p.phase) / 1000)
         FROM phased p WHERE d.id = p.id
         RETURNING d.id",
        limit,
        interval_ms
    )
    .fetch_all(db)
    .await
}

/// Claims every registered edge whose check is due.
pub async fn claim_due_edges(
    db: impl PgExecutor<'_>,
    interval: Duration,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "WITH due AS (
             SELECT id FROM edges WHERE revoked_at IS NULL AND next_health_at <= now()
             FOR UPDATE SKIP LOCKED
         )
         UPDATE edges e SET next_health_at = now() + make_interval(secs => $1)
         FROM due WHERE e.id = due.id
         RETURNING e.id",
        interval.as_secs_f64()
    )
    .fetch_all(db)
    .await
}

/// Recent traffic of one domain, summed over every edge.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrafficSums {
    pub requests: i64,
    pub status_5xx: i64,
    pub upstream_connect_failures: i64,
    pub tls_handshake_failures: i64,
}

/// Everything a domain's health check looks at, in one query.
#[derive(Clone, Debug)]
pub struct DomainSnapshot {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub hostname: String,
    pub targets: Vec<String>,
    pub status: String,
    pub tls_status: String,
    pub dns_diagnosis: Option<serde_json::Value>,
    pub cert_not_after: Option<DateTime<Utc>>,
    /// Edges with a fresh heartbeat that list this host as having no certificate.
    pub missing_on: Vec<String>,
    pub traffic: TrafficSums,
}

/// `None` when the domain no longer exists. `fresh_secs`: heartbeats older
/// than this are not believed; `window_secs`: the traffic looked at.
pub async fn domain_snapshot(
    db: impl PgExecutor<'_>,
    id: Uuid,
    fresh_secs: f64,
    window_secs: f64,
) -> Result<Option<DomainSnapshot>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT d.id, d.tenant_id, d.hostname, d.targets, d.status, d.tls_status, d.dns_diagnosis,
                  c.not_after AS "cert_not_after?",
                  ARRAY(SELECT e.name FROM edges e
                        WHERE e.revoked_at IS NULL AND e.last_seen_at > now() - make_interval(secs => $2)
                          AND d.hostname = ANY (e.hosts_missing_certificate)
                        ORDER BY e.name) AS "missing_on!",
                  t.requests AS "requests!", t.s5xx AS "s5xx!", t.connect AS "connect!", t.tls AS "tls!"
           FROM domains d
           LEFT JOIN certificates c ON c.domain_id = d.id
           CROSS JOIN LATERAL (
               SELECT COALESCE(sum(w.requests), 0)::int8 AS requests,
                      COALESCE(sum(w.status_5xx), 0)::int8 AS s5xx,
                      COALESCE(sum(w.upstream_connect_failures), 0)::int8 AS connect,
                      COALESCE(sum(w.tls_handshake_failures), 0)::int8 AS tls
               FROM traffic_windows w
               WHERE w.domain_id = d.id AND w.window_start > now() - make_interval(secs => $3)
           ) t
           WHERE d.id = $1"#,
        id,
        fresh_secs,
        window_secs
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| DomainSnapshot {
        id: r.id,
        tenant_id: r.tenant_id,
        hostname: r.hostname,
        targets: r.targets,
        status: r.status,
        tls_status: r.tls_status,
        dns_diagnosis: r.dns_diagnosis,
        cert_not_after: r.cert_not_after,
        missing_on: r.missing_on,
        traffic: TrafficSums {
            requests: r.requests,
            status_5xx: r.s5xx,
            upstream_connect_failures: r.connect,
            tls_handshake_failures: r.tls,
        },
    }))
}

/// What an edge's health check looks at.
#[derive(Clone, Debug)]
pub struct EdgeSnapshot {
    pub id: Uuid,
    pub name: String,
    pub region: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub applied_version: Option<i64>,
    pub rejection: Option<serde_json::Value>,
    /// Requests and failures (5xx + upstream connect failures) through this
    /// edge in the window, and through every other edge.
    pub requests: i64,
    pub failures: i64,
    pub others_requests: i64,
    pub others_failures: i64,
}

/// The edge and the current config version; `None` when the edge is gone.
pub async fn edge_snapshot(
    db: impl PgExecutor<'_>,
    id: Uuid,
    window_secs: f64,
) -> Result<Option<(EdgeSnapshot, i64)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT e.id, e.name, e.region, e.created_at, e.last_seen_at, e.applied_version, e.rejection,
                  s.version, t.requests AS "requests!", t.failures AS "failures!",
                  t.others_requests AS "others_requests!", t.others_failures AS "others_failures!"
           FROM edges e CROSS JOIN config_state s
           CROSS JOIN LATERAL (
               SELECT COALESCE(sum(w.requests) FILTER (WHERE w.edge_id = $1), 0)::int8 AS requests,
                      COALESCE(sum(w.status_5xx + w.upstream_connect_failures) FILTER (WHERE w.edge_id = $1), 0)::int8 AS failures,
                      COALESCE(sum(w.requests) FILTER (WHERE w.edge_id <> $1), 0)::int8 AS others_requests,
                      COALESCE(sum(w.status_5xx + w.upstream_connect_failures) FILTER (WHERE w.edge_id <> $1), 0)::int8 AS others_failures
               FROM traffic_windows w
               WHERE w.window_start > now() - make_interval(secs => $2)
           ) t
           WHERE e.id = $1 AND e.revoked_at IS NULL"#,
        id,
        window_secs
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| {
        (
            EdgeSnapshot {
                id: r.id,
                name: r.name,
                region: r.region,
                created_at: r.created_at,
                last_seen_at: r.last_seen_at,
                applied_version: r.applied_version,
                rejection: r.rejection,
                requests: r.requests,
                failures: r.failures,
                others_requests: r.others_requests,
                others_failures: r.others_failures,
            },
            r.version,
        )
    }))
}

/// Asks for a full config resync of one edge: its next config stream (or
/// the open one, woken by the notification) starts with a snapshot.
pub async fn request_resync(db: &PgPool, edge: Uuid) -> Result<Option<String>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let name = sqlx::query_scalar!(
        "UPDATE edges SET resync_requested_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING name",
        edge
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(name) = &name {
        sqlx::query!("SELECT pg_notify($1, $2)", RESYNC_CHANNEL, name)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(name)
}

/// Notifications of resync requests; the payload is the edge's name.
pub const RESYNC_CHANNEL: &str = "portico_edge_resync";

/// Takes the edge's resync request, if any (the stream that honours it
/// calls this, so it is honoured once).
pub async fn take_resync(db: impl PgExecutor<'_>, edge_name: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE edges SET resync_requested_at = NULL WHERE name = $1 AND resync_requested_at IS NOT NULL",
        edge_name
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
