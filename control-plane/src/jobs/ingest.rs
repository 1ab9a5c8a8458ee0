//! `ingest_report`: one edge's traffic report, stored. The windows are
//! upserted in one statement (a re-run or a window sent again overwrites,
//! so the job is idempotent) and the edge's drop counts are recorded in its
//! `counters`. [`prune`] deletes windows past the retention in bounded
//! batches; the scheduler tick calls it.

use super::JobContext;
use crate::db;
use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage};
use portico_protocol::Report;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const QUEUE: &str = "ingest_report";
/// Prune statements one tick runs at most (the rest waits for the next tick).
const PRUNE_ROUNDS: usize = 10;

/// A validated report and the edge it came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IngestReport {
    pub edge_id: Uuid,
    pub report: Report,
}

/// Queues one report.
pub async fn enqueue(pool: &PgPool, job: &IngestReport) -> anyhow::Result<()> {
    let task = TaskBuilder::new(serde_json::to_vec(job)?)
        .max_attempts(5)
        .build();
    let mut conn = pool.acquire().await?;
    apalis_postgres::queries::push_tasks(&mut *conn, QUEUE, vec![task]).await?;
    Ok(())
}

/// Stores one report's windows; returns how many rows were written.
pub async fn ingest(pool: &PgPool, job: &IngestReport) -> anyhow::Result<u64> {
    let mut rows = crate::traffic::rows(&job.report);
    // The API refuses duplicates; a row may not be upserted twice in one
    // statement, so a job queued otherwise keeps the first of each.
    let mut seen = HashSet::new();
    rows.retain(|r| seen.insert((r.host.clone(), r.window_start)));
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut tx = pool.begin().await?;
    let written = db::traffic::upsert(&mut *tx, job.edge_id, &rows).await?;
    db::edges::record_report_drops(
        &mut *tx,
        job.edge_id,
        clamp(job.report.dropped),
        clamp(job.report.events_dropped),
    )
    .await?;
    tx.commit().await?;
    Ok(written)
}

async fn ingest_report(job: IngestReport, ctx: Data<JobContext>) -> Result<(), BoxDynError> {
    match ingest(&ctx.pool, &job).await {
        Ok(rows) => {
            tracing::debug!(job = QUEUE, edge = %job.edge_id, rows, "report ingested");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(job = QUEUE, edge = %job.edge_id, error = %e, "ingesting a report failed");
            Err(e.into())
        }
    }
}

/// Deletes windows older than the retention, at most
/// `PRUNE_ROUNDS × prune_batch` rows per call; returns how many.
pub async fn prune(ctx: &JobContext) -> anyhow::Result<u64> {
    let traffic = &ctx.settings.traffic;
    let before = chrono::Utc::now()
        - chrono::Duration::from_std(traffic.retention).unwrap_or(chrono::Duration::MAX);
    let mut total = 0;
    for _ in 0..PRUNE_ROUNDS {
        let n = db::traffic::prune(&ctx.pool, before, traffic.prune_batch).await?;
        total += n;
        if n < u64::try_from(traffic.prune_batch).unwrap_or(u64::MAX) {
            break;
        }
    }
    Ok(total)
}

pub async fn worker(ctx: JobContext, stop: CancellationToken) -> anyhow::Result<()> {
    let config = Config::default()
        .queue(QUEUE)
        .batch_size(20)
        .heartbeat_interval(Duration::from_secs(10));
    let backend = PostgresStorage::<IngestReport>::new(&ctx.pool)
        .with_config(config)
        .with_pubsub();
    let name = format!("{QUEUE}-{}", Uuid::now_v7().simple());
    let concurrency = ctx.settings.traffic.ingest_concurrency;
    let worker = WorkerBuilder::new(name)
        .backend(backend)
        .data(ctx)
        .concurrency(concurrency)
        .build(ingest_report);
    worker
        .run_until(async move {
            stop.cancelled_owned().await;
            Ok::<(), std::io::Error>(())
        })
        .await?;
    Ok(())
}
