//! `edge_health` and `host_health`: one job per edge and per domain, fanned
//! out by [`fan_out`] on every health tick (edges every
//! `PORTICO_HEALTH_EDGE_INTERVAL_MS`, domains every
//! `PORTICO_HEALTH_HOST_INTERVAL_MS`, spread over the interval). The bodies
//! are [`crate::health::check_edge`] and [`crate::health::check_domain`].

use super::JobContext;
use crate::db;
use apalis::prelude::*;
use apalis_postgres::{Config, PgTask, PostgresStorage};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const EDGE_QUEUE: &str = "edge_health";
pub const HOST_QUEUE: &str = "host_health";
/// Domains claimed per transaction of the fan-out.
const CLAIM_BATCH: i64 = 2000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EdgeHealth {
    pub edge_id: Uuid,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostHealth {
    pub domain_id: Uuid,
}

/// Claims the edges and domains whose check is due and enqueues one job
/// each, in the claim's transaction. Returns (edges, domains) enqueued.
pub async fn fan_out(ctx: &JobContext) -> anyhow::Result<(usize, usize)> {
    let h = &ctx.settings.health;
    let mut tx = ctx.pool.begin().await?;
    let edges = db::health::claim_due_edges(&mut *tx, h.edge_interval).await?;
    push(
        &mut tx,
        EDGE_QUEUE,
        edges.iter().map(|id| EdgeHealth { edge_id: *id }),
    )
    .await?;
    tx.commit().await?;
    let mut hosts = 0;
    loop {
        let mut tx = ctx.pool.begin().await?;
        let due = db::health::claim_due_domains(&mut *tx, CLAIM_BATCH, h.host_interval).await?;
        push(
            &mut tx,
            HOST_QUEUE,
            due.iter().map(|id| HostHealth { domain_id: *id }),
        )
        .await?;
        tx.commit().await?;
        hosts += due.len();
        if due.len() < usize::try_from(CLAIM_BATCH).unwrap_or(usize::MAX) {
            break;
        }
    }
    crate::health::housekeeping(ctx).await?;
    Ok((edges.len(), hosts))
}

async fn push<T: Serialize>(
    conn: &mut PgConnection,
    queue: &str,
    jobs: impl Iterator<Item = T>,
) -> anyhow::Result<()> {
    let tasks: Vec<PgTask> = jobs
        .map(|j| serde_json::to_vec(&j).map(|args| TaskBuilder::new(args).max_attempts(2).build()))
        .collect::<Result<_, _>>()?;
    if !tasks.is_empty() {
        apalis_postgres::queries::push_tasks(conn, queue, tasks).await?;
    }
    Ok(())
}

/// The health tick, until `stop`.
pub async fn run(ctx: JobContext, stop: CancellationToken) -> anyhow::Result<()> {
    let edge = tokio::spawn(worker(ctx.clone(), stop.clone(), EDGE_QUEUE, edge_health));
    let host = tokio::spawn(worker(ctx.clone(), stop.clone(), HOST_QUEUE, host_health));
    let mut tick = tokio::time::interval(ctx.settings.health.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        match fan_out(&ctx).await {
            Ok((0, 0)) => {}
            Ok((edges, hosts)) => tracing::debug!(edges, hosts, "health checks enqueued"),
            Err(e) => tracing::warn!(error = %e, "health fan-out failed; retrying next tick"),
        }
    }
    edge.await??;
    host.await??;
    Ok(())
}

async fn edge_health(job: EdgeHealth, ctx: Data<JobContext>) -> Result<(), BoxDynError> {
    crate::health::check_edge(&ctx, job.edge_id)
        .await
        .map_err(|e| {
            tracing::warn!(job = EDGE_QUEUE, edge = %job.edge_id, error = %e, "check failed");
            BoxDynError::from(e)
        })?;
    Ok(())
}

async fn host_health(job: HostHealth, ctx: Data<JobContext>) -> Result<(), BoxDynError> {
    crate::health::check_domain(&ctx, job.domain_id)
        .await
        .map_err(|e| {
            tracing::warn!(job = HOST_QUEUE, domain = %job.domain_id, error = %e, "check failed");
            BoxDynError::from(e)
        })?;
    Ok(())
}

async fn worker<T, F, Fut>(
    ctx: JobContext,
    stop: CancellationToken,
    queue: &'static str,
    body: F,
) -> anyhow::Result<()>
where
    T: Serialize + for<'de> Deserialize<'de> + Send + Sync + Unpin + 'static,
    F: Fn(T, Data<JobContext>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), BoxDynError>> + Send + 'static,
{
    let config = Config::default()
        .queue(queue)
        .batch_size(100)
        .heartbeat_interval(Duration::from_secs(10));
    let backend = PostgresStorage::<T>::new(&ctx.pool)
        .with_config(config)
        .with_pubsub();
    let name = format!("{queue}-{}", Uuid::now_v7().simple());
    let worker = WorkerBuilder::new(name)
        .backend(backend)
        .data(ctx)
        .concurrency(32)
        .build(body);
    worker
        .run_until(async move {
            stop.cancelled_owned().await;
            Ok::<(), std::io::Error>(())
        })
        .await?;
    Ok(())
}
