//! Background jobs on apalis + Postgres. This module is the only place that
//! knows apalis. Jobs are idempotent: apalis re-queues a job whose worker
//! stopped heart-beating, so any job may run twice.
//!
//! - [`scheduler`]: the periodic fan-out. It never does a check itself; it
//!   claims the domains that are due and enqueues one `check_domain_dns` job
//!   each, in the same transaction as the claim.
//! - [`dns_check`]: one DNS check for one domain.
//! - [`webhooks`]: the webhook dispatcher and the `deliver_webhook` worker.
//! - [`ingest`]: the `ingest_report` worker (edges' traffic reports) and
//!   the pruning of old traffic windows (from the scheduler tick).

pub mod dns_check;
pub mod health;
pub mod ingest;
pub mod issuance;
pub mod repair;
pub mod scheduler;
pub mod webhooks;

use crate::dns::DnsChecker;
use crate::settings::Settings;
use sqlx::PgPool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What every job body may use.
#[derive(Clone)]
pub struct JobContext {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub dns: DnsChecker,
    pub webhooks: crate::webhooks::Webhooks,
    /// Pages ops (the escalation ladders' last step).
    pub alerts: crate::alerts::Alerts,
    /// The machines repairs may restart and replace; `None`: those rungs are skipped.
    pub infra: Option<Arc<dyn crate::infra::Infra>>,
}

/// Runs the workers and the scheduler until `stop` is cancelled.
pub async fn run(ctx: JobContext, stop: CancellationToken) -> anyhow::Result<()> {
    tokio::spawn(issuance::start(ctx.clone(), stop.clone()));
    let worker = tokio::spawn(dns_check::worker(ctx.clone(), stop.clone()));
    let webhooks = tokio::spawn(webhooks::run(ctx.clone(), stop.clone()));
    let health = tokio::spawn(health::run(ctx.clone(), stop.clone()));
    let repair = tokio::spawn(repair::worker(ctx.clone(), stop.clone()));
    let ingest = tokio::spawn(ingest::worker(ctx.clone(), stop.clone()));
    let scheduler = tokio::spawn(scheduler::run(ctx, stop));
    worker.await??;
    scheduler.await?;
    webhooks.await??;
    health.await??;
    repair.await??;
    ingest.await??;
    Ok(())
}

/// How one queue's worker runs.
pub(crate) struct WorkerShape {
    pub queue: &'static str,
    /// Jobs fetched per poll.
    pub batch: usize,
    /// Jobs run at once.
    pub concurrency: usize,
    /// How often the worker tells apalis it is alive (a worker silent for
    /// longer has its jobs re-queued).
    pub heartbeat: std::time::Duration,
}

/// Runs `body` for every job of `shape.queue` until `stop`. The one place
/// that builds an apalis worker.
pub(crate) async fn run_worker<T, F, Fut>(
    ctx: JobContext,
    stop: CancellationToken,
    shape: WorkerShape,
    body: F,
) -> anyhow::Result<()>
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + Send + Sync + Unpin + 'static,
    F: Fn(T, apalis::prelude::Data<JobContext>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), apalis::prelude::BoxDynError>> + Send + 'static,
{
    use apalis::prelude::*;
    let config = apalis_postgres::Config::default()
        .queue(shape.queue)
        .batch_size(shape.batch)
        .heartbeat_interval(shape.heartbeat);
    let backend = apalis_postgres::PostgresStorage::<T>::new(&ctx.pool)
        .with_config(config)
        .with_pubsub();
    let name = format!("{}-{}", shape.queue, uuid::Uuid::now_v7().simple());
    let worker = WorkerBuilder::new(name)
        .backend(backend)
        .data(ctx)
        .concurrency(shape.concurrency)
        .build(body);
    worker
        .run_until(async move {
            stop.cancelled_owned().await;
            Ok::<(), std::io::Error>(())
        })
        .await?;
    Ok(())
}
