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
