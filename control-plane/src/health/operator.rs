//! What ops may do to a repair run, from the API and the dashboard:
//! pause (no more steps until resumed), resume (the next rung, now), retry
//! (the current rung again, now, even while paused) and close (for good,
//! resolving its page). Each returns the run as it is afterwards.

use super::repair;
use crate::alerts::Alerts;
use crate::db;
use crate::db::repairs::RunRecord;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("no repair run {0}")]
    NotFound(Uuid),
    #[error("the run is closed")]
    Closed,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub async fn pause(pool: &PgPool, run: Uuid) -> Result<RunRecord, OperatorError> {
    set(pool, run, "paused").await
}

pub async fn resume(pool: &PgPool, run: Uuid) -> Result<RunRecord, OperatorError> {
    let mut tx = pool.begin().await?;
    let Some(r) = db::repairs::set_status(&mut *tx, run, "open").await? else {
        drop(tx);
        return Err(closed_or_missing(pool, run).await);
    };
    crate::jobs::repair::enqueue_by(
        &mut tx,
        r.id,
        r.next_rung,
        Duration::ZERO,
        repair::BY_OPERATOR,
    )
    .await?;
    tx.commit().await?;
    Ok(r)
}

/// Runs the rung the run is at again, now: the previous rung when the run
/// is waiting for its next one (a repair worth another try), else the same.
pub async fn retry(pool: &PgPool, run: Uuid) -> Result<RunRecord, OperatorError> {
    let mut tx = pool.begin().await?;
    let current = db::repairs::lock(&mut tx, run)
        .await?
        .ok_or(OperatorError::NotFound(run))?;
    if current.status == "closed" {
        return Err(OperatorError::Closed);
    }
    let rung = (current.next_rung - 1).max(0);
    db::repairs::advance(&mut tx, run, rung, Some(chrono::Utc::now())).await?;
    let r = db::repairs::set_status(&mut *tx, run, "open")
        .await?
        .ok_or(OperatorError::Closed)?;
    crate::jobs::repair::enqueue_by(&mut tx, run, rung, Duration::ZERO, repair::BY_OPERATOR)
        .await?;
    tx.commit().await?;
    Ok(r)
}

pub async fn close(
    pool: &PgPool,
    alerts: &Alerts,
    run: Uuid,
    note: &str,
) -> Result<RunRecord, OperatorError> {
    let note = if note.trim().is_empty() {
        "closed by an operator"
    } else {
        note
    };
    let existing = db::repairs::get(pool, run)
        .await?
        .ok_or(OperatorError::NotFound(run))?;
    if existing.status == "closed" {
        return Err(OperatorError::Closed);
    }
    repair::close_run(pool, alerts, run, "closed_by_operator", note).await?;
    db::repairs::get(pool, run)
        .await?
        .ok_or(OperatorError::NotFound(run))
}

async fn set(pool: &PgPool, run: Uuid, status: &str) -> Result<RunRecord, OperatorError> {
    match db::repairs::set_status(pool, run, status).await? {
        Some(r) => Ok(r),
        None => Err(closed_or_missing(pool, run).await),
    }
}

async fn closed_or_missing(pool: &PgPool, run: Uuid) -> OperatorError {
    match db::repairs::get(pool, run).await {
        Ok(Some(_)) => OperatorError::Closed,
        Ok(None) => OperatorError::NotFound(run),
        Err(e) => OperatorError::Db(e),
    }
}
