//! Traffic windows the edges report (`traffic_windows`): written by the
//! `ingest_report` job in one idempotent upsert per report, read by the
//! health checks and the dashboard as totals and series, pruned after the
//! retention.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// One window ready to store: the protocol's `StatsWindow`, validated and
/// converted to column types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowRow {
    pub host: String,
    pub window_start: DateTime<Utc>,
    pub secs: i32,
    pub requests: i64,
    pub status_2xx: i64,
    pub status_3xx: i64,
    pub status_4xx: i64,
    pub status_5xx: i64,
    pub upstream_connect_failures: i64,
    pub tls_handshake_failures: i64,
    pub latency_bounds_ms: Vec<i32>,
    pub latency_counts: Vec<i64>,
}

/// Sums over a set of windows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficTotals {
    pub requests: i64,
    pub status_2xx: i64,
    pub status_3xx: i64,
    pub status_4xx: i64,
    pub status_5xx: i64,
    pub upstream_connect_failures: i64,
    pub tls_handshake_failures: i64,
    /// Windows summed (one per host, edge and window start).
    pub windows: i64,
}

/// One bucket of a domain's series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesPoint {
    pub start: DateTime<Utc>,
    pub requests: i64,
    pub errors_5xx: i64,
    pub upstream_connect_failures: i64,
    /// The upper bound (ms) of the latency bucket holding the 95th
    /// percentile; `None` without requests, or when it is the open-ended
    /// last bucket.
    pub p95_ms_estimate: Option<i32>,
}

/// Upserts `rows` for `edge_id` in one statement; `domain_id` is resolved
/// from the host in the same statement. A window already stored (a retried
/// report, a re-run job) is overwritten. `rows` must not repeat a
/// (host, window_start). Returns the rows written.
pub async fn upsert(
    db: impl PgExecutor<'_>,
    edge_id: Uuid,
    rows: &[WindowRow],
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&WindowRow) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
    let hosts: Vec<String> = rows.iter().map(|r| r.host.clone()).collect();
    let starts: Vec<DateTime<Utc>> = rows.iter().map(|r| r.window_start).collect();
    let secs: Vec<i32> = rows.iter().map(|r| r.secs).collect();
    // Arrays of arrays do not unnest row by row: each histogram travels as
    // an array literal (digits and commas only) and is cast back.
    let literal = |v: Vec<String>| format!("{{{}}}", v.join(","));
    let bounds: Vec<String> = rows
        .iter()
        .map(|r| literal(r.latency_bounds_ms.iter().map(i32::to_string).collect()))
        .collect();
    let counts: Vec<String> = rows
        .iter()
        .map(|r| literal(r.latency_counts.iter().map(i64::to_string).collect()))
        .collect();
    let done = sqlx::query!(
        "INSERT INTO traffic_windows (host, window_start, edge_id, domain_id, secs, requests,
                status_2xx, status_3xx, status_4xx, status_5xx, upstream_connect_failures,
                tls_handshake_failures, latency_bounds_ms, latency_counts, received_at)
         SELECT w.host, w.start, $1, d.id, w.secs, w.requests, w.s2, w.s3, w.s4, w.s5, w.ucf,
                w.tls, w.bounds::integer[], w.counts::bigint[], now()
         FROM UNNEST($2::text[], $3::timestamptz[], $4::integer[], $5::bigint[], $6::bigint[],
                     $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
                     $12::text[], $13::text[])
              AS w(host, start, secs, requests, s2, s3, s4, s5, ucf, tls, bounds, counts)
         LEFT JOIN domains d ON d.hostname = w.host
         ON CONFLICT (host, window_start, edge_id) DO UPDATE SET
             domain_id = EXCLUDED.domain_id, secs = EXCLUDED.secs, requests = EXCLUDED.requests,
             status_2xx = EXCLUDED.status_2xx, status_3xx = EXCLUDED.status_3xx,
             status_4xx = EXCLUDED.status_4xx, status_5xx = EXCLUDED.status_5xx,
             upstream_connect_failures = EXCLUDED.upstream_connect_failures,
             tls_handshake_failures = EXCLUDED.tls_handshake_failures,
             latency_bounds_ms = EXCLUDED.latency_bounds_ms,
             latency_counts = EXCLUDED.latency_counts, received_at = now()",
        edge_id,
        &hosts,
        &starts,
        &secs,
        &col(|r| r.requests),
        &col(|r| r.status_2xx),
        &col(|r| r.status_3xx),
        &col(|r| r.status_4xx),
        &col(|r| r.status_5xx),
        &col(|r| r.upstream_connect_failures),
        &col(|r| r.tls_handshake_failures),
        &bounds,
        &counts
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `batch` windows that started before `before`; returns how
/// many. Callers loop while a full batch was deleted.
pub async fn prune(db: &PgPool, before: DateTime<Utc>, batch: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM traffic_windows WHERE ctid = ANY (ARRAY(
             SELECT ctid FROM traffic_windows WHERE window_start < $1 LIMIT $2))",
        before,
        batch
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// A domain's totals over every edge, for windows starting at `since` or later.
pub async fn domain_totals(
    pool: &PgPool,
    domain_id: Uuid,
    since: DateTime<Utc>,
) -> Result<TrafficTotals, sqlx::Error> {
    sqlx::query_as!(
        TrafficTotals,
        r#"SELECT COALESCE(sum(requests), 0)::bigint AS "requests!",
                  COALESCE(sum(status_2xx), 0)::bigint AS "status_2xx!",
                  COALESCE(sum(status_3xx), 0)::bigint AS "status_3xx!",
                  COALESCE(sum(status_4xx), 0)::bigint AS "status_4xx!",
                  COALESCE(sum(status_5xx), 0)::bigint AS "status_5xx!",
                  COALESCE(sum(upstream_connect_failures), 0)::bigint AS "upstream_connect_failures!",
                  COALESCE(sum(tls_handshake_failures), 0)::bigint AS "tls_handshake_failures!",
                  count(*) AS "windows!"
           FROM traffic_windows WHERE domain_id = $1 AND window_start >= $2"#,
        domain_id,
        since
    )
    .fetch_one(pool)
    .await
}

/// An edge's totals over every host, for windows starting at `since` or later.
pub async fn edge_totals(
    pool: &PgPool,
    edge_id: Uuid,
    since: DateTime<Utc>,
) -> Result<TrafficTotals, sqlx::Error> {
    sqlx::query_as!(
        TrafficTotals,
        r#"SELECT COALESCE(sum(requests), 0)::bigint AS "requests!",
                  COALESCE(sum(status_2xx), 0)::bigint AS "status_2xx!",
                  COALESCE(sum(status_3xx), 0)::bigint AS "status_3xx!",
                  COALESCE(sum(status_4xx), 0)::bigint AS "status_4xx!",
                  COALESCE(sum(status_5xx), 0)::bigint AS "status_5xx!",
                  COALESCE(sum(upstream_connect_failures), 0)::bigint AS "upstream_connect_failures!",
                  COALESCE(sum(tls_handshake_failures), 0)::bigint AS "tls_handshake_failures!",
                  count(*) AS "windows!"
           FROM traffic_windows WHERE edge_id = $1 AND window_start >= $2"#,
        edge_id,
        since
    )
    .fetch_one(pool)
    .await
}

/// Totals per edge that reported windows starting at `since` or later.
pub async fn edges_recent(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<(Uuid, TrafficTotals)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT edge_id,
                  sum(requests)::bigint AS "requests!",
                  sum(status_2xx)::bigint AS "status_2xx!",
                  sum(status_3xx)::bigint AS "status_3xx!",
                  sum(status_4xx)::bigint AS "status_4xx!",
                  sum(status_5xx)::bigint AS "status_5xx!",
                  sum(upstream_connect_failures)::bigint AS "upstream_connect_failures!",
                  sum(tls_handshake_failures)::bigint AS "tls_handshake_failures!",
                  count(*) AS "windows!"
           FROM traffic_windows WHERE window_start >= $1
           GROUP BY edge_id ORDER BY edge_id"#,
        since
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let totals = TrafficTotals {
                requests: r.requests,
                status_2xx: r.status_2xx,
                status_3xx: r.status_3xx,
                status_4xx: r.status_4xx,
                status_5xx: r.status_5xx,
                upstream_connect_failures: r.upstream_connect_failures,
                tls_handshake_failures: r.tls_handshake_failures,
                windows: r.windows,
            };
            (r.edge_id, totals)
        })
        .collect())
}

/// A domain's traffic since `since` in buckets of `bucket_secs` (at least
/// 1), oldest first; buckets without windows are left out.
pub async fn domain_series(
    pool: &PgPool,
    domain_id: Uuid,
    since: DateTime<Utc>,
    bucket_secs: i32,
) -> Result<Vec<SeriesPoint>, sqlx::Error> {
    let bucket = f64::from(bucket_secs.max(1));
    let sums = sqlx::query!(
        r#"SELECT to_timestamp(floor(extract(epoch FROM window_start) / $3::float8) * $3::float8) AS "start!",
                  sum(requests)::bigint AS "requests!",
                  sum(status_5xx)::bigint AS "errors_5xx!",
                  sum(upstream_connect_failures)::bigint AS "upstream_connect_failures!"
           FROM traffic_windows WHERE domain_id = $1 AND window_start >= $2
           GROUP BY 1 ORDER BY 1"#,
        domain_id,
        since,
        bucket
    )
    .fetch_all(pool)
    .await?;
    let latency = sqlx::query!(
        r#"SELECT to_timestamp(floor(extract(epoch FROM t.window_start) / $3::float8) * $3::float8) AS "start!",
                  u.bound AS "bound!", sum(u.n)::bigint AS "n!"
           FROM traffic_windows t,
                UNNEST(t.latency_bounds_ms, t.latency_counts) AS u(bound, n)
           WHERE t.domain_id = $1 AND t.window_start >= $2
           GROUP BY 1, 2 ORDER BY 1, 2"#,
        domain_id,
        since,
        bucket
    )
    .fetch_all(pool)
    .await?;
    Ok(sums
        .into_iter()
        .map(|s| {
            let histogram: Vec<(i32, i64)> = latency
                .iter()
                .filter(|l| l.start == s.start)
                .map(|l| (l.bound, l.n))
                .collect();
            SeriesPoint {
                start: s.start,
                requests: s.requests,
                errors_5xx: s.errors_5xx,
                upstream_connect_failures: s.upstream_connect_failures,
                p95_ms_estimate: percentile_bound(&histogram, 0.95),
            }
        })
        .collect())
}

/// The upper bound of the bucket holding quantile `q` of a histogram of
/// (ascending upper bound, count); `None` when it is empty or the quantile
/// falls in the open-ended last bucket.
pub fn percentile_bound(histogram: &[(i32, i64)], q: f64) -> Option<i32> {
    let total: i64 = histogram.iter().map(|(_, n)| (*n).max(0)).sum();
    if total == 0 {
        return None;
    }
    // Rank of the quantile, 1-based: ceil(q * total).
    let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0);
    let mut seen = 0i64;
    for (bound, n) in histogram {
        seen += (*n).max(0);
        if seen as f64 >= rank {
            return (*bound < i32::MAX).then_some(*bound);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::percentile_bound;

    #[test]
    fn the_p95_bound_is_the_bucket_holding_the_95th_percentile() {
        assert_eq!(percentile_bound(&[], 0.95), None);
        assert_eq!(percentile_bound(&[(5, 95), (100, 5)], 0.95), Some(5));
        assert_eq!(percentile_bound(&[(5, 94), (100, 6)], 0.95), Some(100));
        assert_eq!(percentile_bound(&[(5, 1), (i32::MAX, 99)], 0.95), None);
    }
}
