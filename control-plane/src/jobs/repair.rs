//! `repair_step`: one rung of one repair run ([`crate::health::repair`]).
//! Enqueued when a run opens, after each rung (delayed by the rung's wait),
//! by an operator's resume or retry, and by the health tick for a step
//! whose job was lost. Duplicates are harmless: the body skips a rung that
//! is no longer the run's next.

use super::JobContext;
use crate::health::repair;
use apalis::prelude::*;
use apalis_postgres::{Config, PgTask, PostgresStorage};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const QUEUE: &str = "repair_step";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepairStep {
    pub run_id: Uuid,
    pub rung: i32,
    #[serde(default = "ladder")]
    pub by: String,
}

fn ladder() -> String {
    repair::BY_LADDER.to_string()
}

/// Enqueues rung `rung` of `run`, due after `delay`, in the caller's transaction.
pub async fn enqueue(
    conn: &mut PgConnection,
    run: Uuid,
    rung: i32,
    delay: Duration,
) -> anyhow::Result<()> {
    enqueue_by(conn, run, rung, delay, repair::BY_LADDER).await
}

pub async fn enqueue_by(
    conn: &mut PgConnection,
    run: Uuid,
    rung: i32,
    delay: Duration,
    by: &str,
) -> anyhow::Result<()> {
    let args = serde_json::to_vec(&RepairStep {
        run_id: run,
        rung,
        by: by.to_string(),
    })?;
    let mut task = TaskBuilder::new(args).max_attempts(3);
    if !delay.is_zero() {
        task = task.run_after(delay);
    }
    let tasks: Vec<PgTask> = vec![task.build()];
    apalis_postgres::queries::push_tasks(conn, QUEUE, tasks).await?;
    Ok(())
}

async fn repair_step(job: RepairStep, ctx: Data<JobContext>) -> Result<(), BoxDynError> {
    repair::run_step(&ctx, job.run_id, job.rung, &job.by)
        .await
        .map_err(|e| {
            tracing::warn!(job = QUEUE, run = %job.run_id, rung = job.rung, error = %e, "repair step failed");
            BoxDynError::from(e)
        })
}

pub async fn worker(ctx: JobContext, stop: CancellationToken) -> anyhow::Result<()> {
    let config = Config::default()
        .queue(QUEUE)
        .batch_size(20)
        .heartbeat_interval(Duration::from_secs(5));
    let backend = PostgresStorage::<RepairStep>::new(&ctx.pool)
        .with_config(config)
        .with_pubsub();
    let name = format!("{QUEUE}-{}", Uuid::now_v7().simple());
    let worker = WorkerBuilder::new(name)
        .backend(backend)
        .data(ctx)
        .concurrency(16)
        .build(repair_step);
    worker
        .run_until(async move {
            stop.cancelled_owned().await;
            Ok::<(), std::io::Error>(())
        })
        .await?;
    Ok(())
}
