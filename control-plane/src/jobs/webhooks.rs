//! Webhook delivery on apalis. The dispatcher loop wakes on `NOTIFY
//! portico_events` (or every `PORTICO_WEBHOOK_TICK_MS`), turns new outbox
//! events into messages, then leases due messages and enqueues one
//! `deliver_webhook` job each, in the lease's transaction. A worker that
//! dies mid-send loses nothing: when the lease ends the message is due
//! again and is sent with the same `webhook-id`.
//!
//! Each dispatcher keeps at most [`IN_FLIGHT_PER_SLOT`] × concurrency
//! messages leased, so a backlog behind a slow endpoint waits in the table
//! (due, unleased) instead of as jobs whose leases run out in the queue.

use super::JobContext;
use crate::db;
use crate::webhooks::{deliver, dispatch};
use apalis::prelude::*;
use apalis_postgres::PgTask;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const QUEUE: &str = "deliver_webhook";
const CHANNEL: &str = "portico_events";
/// Leased-but-unfinished messages per delivery slot of this process.
pub const IN_FLIGHT_PER_SLOT: i64 = 4;
/// How often finished messages older than the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Pause before the next pass while a backlog is waiting for room.
const BACKLOG_PAUSE: Duration = Duration::from_millis(25);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliverWebhook {
    pub message_id: Uuid,
    pub lease_token: Uuid,
}

/// Runs the dispatcher and the delivery worker until `stop`.
pub async fn run(ctx: JobContext, stop: CancellationToken) -> anyhow::Result<()> {
    let dispatcher = tokio::spawn(dispatcher(ctx.clone(), stop.clone()));
    let result = worker(ctx, stop).await;
    let _ = dispatcher.await;
    result
}

async fn dispatcher(ctx: JobContext, stop: CancellationToken) {
    let mut listener = PgListener::connect_with(&ctx.pool).await.ok();
    if let Some(l) = listener.as_mut()
        && let Err(e) = l.listen(CHANNEL).await
    {
        tracing::warn!(error = %e, "cannot LISTEN for events; polling");
        listener = None;
    }
    let mut tick = tokio::time::interval(ctx.settings.webhooks.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let owner = Uuid::now_v7();
    let mut backlog = false;
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = prune.tick() => prune_old(&ctx).await,
            _ = tokio::time::sleep(BACKLOG_PAUSE), if backlog => {}
            n = async { match listener.as_mut() { Some(l) => l.try_recv().await.ok().flatten(), None => std::future::pending().await } } => {
                // The LISTEN connection dropped; sqlx reconnects on the next call.
                if n.is_none() { tokio::time::sleep(Duration::from_millis(100)).await; } // allow-sleep: pause before reconnecting
            }
        }
        backlog = match tick_once(&ctx, owner).await {
            Ok(pass) => pass.full,
            Err(e) => {
                tracing::warn!(error = %e, "webhook dispatch failed; retrying next tick");
                false
            }
        };
    }
}

/// What one pass did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pass {
    /// Messages leased and enqueued.
    pub enqueued: usize,
    /// The in-flight cap was reached: more may be due.
    pub full: bool,
}

/// One pass for dispatcher `owner`: dispatch new events, then lease due
/// messages up to the in-flight cap and enqueue them. Public so tests and
/// benchmarks can drive it.
pub async fn tick_once(ctx: &JobContext, owner: Uuid) -> anyhow::Result<Pass> {
    dispatch::dispatch(&ctx.pool).await?;
    let slots = i64::try_from(ctx.settings.webhooks.concurrency).unwrap_or(i64::MAX);
    let cap = slots.saturating_mul(IN_FLIGHT_PER_SLOT);
    let room = cap - db::webhook_messages::in_flight(&ctx.pool, owner).await?;
    if room <= 0 {
        return Ok(Pass {
            enqueued: 0,
            full: true,
        });
    }
    let mut tx = ctx.pool.begin().await?;
    let due =
        db::webhook_messages::claim_due(&mut tx, room, ctx.settings.webhooks.lease, owner).await?;
    enqueue(&mut tx, &due).await?;
    tx.commit().await?;
    Ok(Pass {
        enqueued: due.len(),
        full: due.len() as i64 == room,
    })
}

async fn prune_old(ctx: &JobContext) {
    match db::webhook_messages::prune(&ctx.pool, ctx.settings.webhooks.retain).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "old webhook messages pruned"),
        Err(e) => tracing::warn!(error = %e, "pruning webhook messages failed"),
    }
}

async fn enqueue(conn: &mut sqlx::PgConnection, due: &[(Uuid, Uuid)]) -> anyhow::Result<()> {
    if due.is_empty() {
        return Ok(());
    }
    let tasks: Vec<PgTask> = due
        .iter()
        .map(|(message_id, lease_token)| {
            serde_json::to_vec(&DeliverWebhook {
                message_id: *message_id,
                lease_token: *lease_token,
            })
            .map(|args| TaskBuilder::new(args).max_attempts(3).build())
        })
        .collect::<Result<_, _>>()?;
    apalis_postgres::queries::push_tasks(conn, QUEUE, tasks).await?;
    Ok(())
}

async fn deliver_webhook(job: DeliverWebhook, ctx: Data<JobContext>) -> Result<(), BoxDynError> {
    deliver::deliver(&ctx.webhooks, &ctx.pool, job.message_id, job.lease_token)
        .await
        .map_err(|e| {
            tracing::warn!(job = QUEUE, message = %job.message_id, error = %e, "delivery failed to record; the lease will bring it back");
            e.into()
        })
}

async fn worker(ctx: JobContext, stop: CancellationToken) -> anyhow::Result<()> {
    let shape = super::WorkerShape {
        queue: QUEUE,
        batch: 50,
        concurrency: ctx.settings.webhooks.concurrency,
        heartbeat: Duration::from_secs(10),
    };
    super::run_worker(ctx, stop, shape, deliver_webhook).await
}
