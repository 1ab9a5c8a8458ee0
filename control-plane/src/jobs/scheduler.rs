//! The periodic fan-out: every tick, claim the domains whose check is due and
//! enqueue one `check_domain_dns` job each, in one transaction, so a crash
//! between the two loses nothing. Claims use `FOR UPDATE SKIP LOCKED`, so any
//! number of workers may tick at once. Also marks long-pending domains stale
//! and forgets old idempotency keys and traffic windows past the retention.

use super::JobContext;
use crate::db;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a claimed domain stays claimed if its job never runs.
const CLAIM_LEASE: Duration = Duration::from_secs(600);
const CLAIM_BATCH: i64 = 1000;

pub async fn run(ctx: JobContext, stop: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.settings.checks.scheduler_tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = fan_out(&ctx).await {
            tracing::warn!(error = %e, "scheduler tick failed; retrying next tick");
        }
    }
}

/// One tick. Public so tests can drive the schedule without waiting.
pub async fn fan_out(ctx: &JobContext) -> anyhow::Result<usize> {
    let stale = crate::verification::mark_stale(&ctx.pool, &ctx.settings).await?;
    if stale > 0 {
        tracing::info!(count = stale, "pending domains marked stale");
    }
    let mut total = 0;
    loop {
        let mut tx = ctx.pool.begin().await?;
        let due = db::domains::claim_due(&mut *tx, CLAIM_BATCH, CLAIM_LEASE).await?;
        super::dns_check::enqueue(&mut tx, &due).await?;
        tx.commit().await?;
        total += due.len();
        if due.len() < CLAIM_BATCH as usize {
            break;
        }
    }
    db::idempotency::prune(&ctx.pool).await?;
    // Finished jobs: kept an hour for the dashboard and debugging.
    let mut pruned = 0;
    for _ in 0..10 {
        let n = db::jobs::prune_done(&ctx.pool, 3600.0, 10_000).await?;
        pruned += n;
        if n < 10_000 {
            break;
        }
    }
    if pruned > 0 {
        tracing::debug!(pruned, "finished jobs deleted");
    }
    let pruned = super::ingest::prune(ctx).await?;
    if pruned > 0 {
        tracing::debug!(rows = pruned, "old traffic windows pruned");
    }
    Ok(total)
}
