//! `check_domain_dns`: one DNS check for one domain, through
//! [`crate::verification::check_domain`]. Re-running it is harmless: it
//! re-reads the domain under a row lock and applies the status machine again.

use super::JobContext;
use crate::ids::DomainId;
use crate::verification;
use apalis::prelude::*;
use apalis_postgres::PgTask;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const QUEUE: &str = "check_domain_dns";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckDomainDns {
    pub domain_id: Uuid,
}

/// Enqueues one check per domain inside the caller's transaction.
pub async fn enqueue(conn: &mut PgConnection, domains: &[Uuid]) -> anyhow::Result<()> {
    if domains.is_empty() {
        return Ok(());
    }
    let tasks: Vec<PgTask> = domains
        .iter()
        .map(|id| {
            serde_json::to_vec(&CheckDomainDns { domain_id: *id })
                .map(|args| TaskBuilder::new(args).max_attempts(3).build())
        })
        .collect::<Result<_, _>>()?;
    apalis_postgres::queries::push_tasks(conn, QUEUE, tasks).await?;
    Ok(())
}

async fn check_domain_dns(job: CheckDomainDns, ctx: Data<JobContext>) -> Result<(), BoxDynError> {
    let id = DomainId::from_uuid(job.domain_id);
    match verification::check_domain(&ctx.pool, &ctx.settings, &ctx.dns, id).await {
        Ok(Some(checked)) => {
            tracing::debug!(job = QUEUE, host = %checked.domain.hostname, verdict = ?checked.diagnosis.verdict, "checked");
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            tracing::warn!(job = QUEUE, domain = %job.domain_id, error = %e, "check failed");
            Err(e.into())
        }
    }
}

pub async fn worker(ctx: JobContext, stop: CancellationToken) -> anyhow::Result<()> {
    let shape = super::WorkerShape {
        queue: QUEUE,
        batch: 50,
        concurrency: 16,
        heartbeat: Duration::from_secs(10),
    };
    super::run_worker(ctx, stop, shape, check_domain_dns).await
}
