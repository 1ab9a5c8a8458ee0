//! The job queue's own table (`apalis.jobs`): apalis keeps finished jobs,
//! and the health checks alone finish one per domain per interval, so done
//! jobs are deleted once they are old, in bounded batches.

use sqlx::PgPool;

/// Index the pruning uses (created by [`crate::db::migrate`] after apalis's
/// own schema exists).
pub const DONE_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS portico_jobs_done ON apalis.jobs (done_at) WHERE status = 'Done'";

/// Deletes up to `batch` jobs that finished more than `older_than_secs`
/// ago; returns how many.
pub async fn prune_done(db: &PgPool, older_than_secs: f64, batch: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM apalis.jobs WHERE id IN (
             SELECT id FROM apalis.jobs
             WHERE status = 'Done' AND done_at < now() - make_interval(secs => $1)
             ORDER BY done_at LIMIT $2)",
        older_than_secs,
        batch
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
