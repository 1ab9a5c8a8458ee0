//! Repair runs (one escalation of one ladder for one subject) and their
//! steps (one rung each: the re-check, then the repair).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Clone, Debug, serde::Serialize)]
pub struct RunRecord {
    pub id: Uuid,
    pub subject_kind: String,
    pub subject_id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub subject_name: String,
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub next_rung: i32,
    pub next_step_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub outcome_note: Option<String>,
    pub alert_id: Option<Uuid>,
    pub tenant_notified_at: Option<DateTime<Utc>>,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct StepRecord {
    pub id: Uuid,
    pub run_id: Uuid,
    pub rung: i32,
    pub action: String,
    pub checked: String,
    pub check_passed: Option<bool>,
    pub did: String,
    pub result: String,
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    /// Touched by the worker running the step while it runs.
    pub alive_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub struct NewRun<'a> {
    pub subject_kind: &'a str,
    pub subject_id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub subject_name: &'a str,
    pub kind: &'a str,
    pub reason: &'a str,
}

/// Opens a run due now; `None` when one is already open for the subject
/// and kind (the unique index decides, so two workers cannot both open one).
pub async fn open(
    db: impl PgExecutor<'_>,
    r: &NewRun<'_>,
) -> Result<Option<RunRecord>, sqlx::Error> {
    sqlx::query_as!(
        RunRecord,
        "INSERT INTO repair_runs (id, subject_kind, subject_id, tenant_id, subject_name, kind, reason, next_step_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now())
         ON CONFLICT (subject_kind, subject_id, kind) WHERE status <> 'closed' DO NOTHING
         RETURNING *",
        Uuid::now_v7(),
        r.subject_kind,
        r.subject_id,
        r.tenant_id,
        r.subject_name,
        r.kind,
        r.reason
    )
    .fetch_optional(db)
    .await
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<RunRecord>, sqlx::Error> {
    sqlx::query_as!(RunRecord, "SELECT * FROM repair_runs WHERE id = $1", id)
        .fetch_optional(db)
        .await
}

/// The run with its row lock, for the rest of the transaction.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<RunRecord>, sqlx::Error> {
    sqlx::query_as!(
        RunRecord,
        "SELECT * FROM repair_runs WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(conn)
    .await
}

/// The run not closed for (subject, kind), if any.
pub async fn find_unclosed(
    db: impl PgExecutor<'_>,
    subject_id: Uuid,
    kind: &str,
) -> Result<Option<RunRecord>, sqlx::Error> {
    sqlx::query_as!(
        RunRecord,
        "SELECT * FROM repair_runs WHERE subject_id = $1 AND kind = $2 AND status <> 'closed'",
        subject_id,
        kind
    )
    .fetch_optional(db)
    .await
}

/// Moves the run to `next_rung`, due at `at` (`None`: not scheduled).
pub async fn advance(
    conn: &mut PgConnection,
    id: Uuid,
    next_rung: i32,
    at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE repair_runs SET next_rung = $2, next_step_at = $3, updated_at = now() WHERE id = $1",
        id,
        next_rung,
        at
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Pauses or resumes (`open`, due now) a run that is not closed.
pub async fn set_status(
    db: impl PgExecutor<'_>,
    id: Uuid,
    status: &str,
) -> Result<Option<RunRecord>, sqlx::Error> {
    sqlx::query_as!(
        RunRecord,
        "UPDATE repair_runs SET status = $2, updated_at = now(),
                next_step_at = CASE WHEN $2 = 'open' THEN now() ELSE next_step_at END
         WHERE id = $1 AND status <> 'closed'
         RETURNING *",
        id,
        status
    )
    .fetch_optional(db)
    .await
}

/// Closes a run that is not closed yet; `None` when it already was.
pub async fn close(
    db: impl PgExecutor<'_>,
    id: Uuid,
    outcome: &str,
    note: &str,
) -> Result<Option<RunRecord>, sqlx::Error> {
    sqlx::query_as!(
        RunRecord,
        "UPDATE repair_runs SET status = 'closed', outcome = $2, outcome_note = $3,
                closed_at = now(), updated_at = now(), next_step_at = NULL
         WHERE id = $1 AND status <> 'closed'
         RETURNING *",
        id,
        outcome,
        note
    )
    .fetch_optional(db)
    .await
}

pub async fn set_alert(db: impl PgExecutor<'_>, id: Uuid, alert: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE repair_runs SET alert_id = $2, updated_at = now() WHERE id = $1",
        id,
        alert
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Marks the tenant told; `false` when it already was (tell once per run).
pub async fn mark_notified(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE repair_runs SET tenant_notified_at = now(), updated_at = now()
         WHERE id = $1 AND tenant_notified_at IS NULL",
        id
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Open runs whose step is overdue by more than `grace_secs`: their job was
/// lost or its worker died. Their due time moves to now (so the next call
/// does not return them again for another `grace_secs`); the caller
/// enqueues their step again, in the same transaction.
pub async fn claim_overdue(
    conn: &mut PgConnection,
    grace_secs: f64,
    limit: i64,
) -> Result<Vec<(Uuid, i32)>, sqlx::Error> {
    let rows = sqlx::query!(
        "UPDATE repair_runs SET next_step_at = now()
         WHERE id IN (SELECT r.id FROM repair_runs r
                      WHERE r.status = 'open' AND r.next_step_at < now() - make_interval(secs => $1)
                        AND NOT EXISTS (SELECT 1 FROM repair_steps s
                                        WHERE s.run_id = r.id AND s.finished_at IS NULL
                                          AND s.alive_at > now() - make_interval(secs => $1))
                      ORDER BY r.next_step_at LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING id, next_rung",
        grace_secs,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.next_rung)).collect())
}

/// Runs not closed whose subject no longer exists.
pub async fn orphaned(db: impl PgExecutor<'_>) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT r.id FROM repair_runs r
         WHERE r.status <> 'closed' AND (
            (r.subject_kind = 'domain' AND NOT EXISTS (SELECT 1 FROM domains d WHERE d.id = r.subject_id))
         OR (r.subject_kind = 'edge' AND NOT EXISTS
                (SELECT 1 FROM edges e WHERE e.id = r.subject_id AND e.revoked_at IS NULL)))"
    )
    .fetch_all(db)
    .await
}

// ---- steps ----

/// The step of this run still in flight, if any.
pub async fn running_step(
    conn: &mut PgConnection,
    run: Uuid,
) -> Result<Option<StepRecord>, sqlx::Error> {
    sqlx::query_as!(
        StepRecord,
        "SELECT * FROM repair_steps WHERE run_id = $1 AND finished_at IS NULL",
        run
    )
    .fetch_optional(conn)
    .await
}

/// Starts a step; `None` when another step of the run is in flight (the
/// unique index on running steps decides).
pub async fn start_step(
    conn: &mut PgConnection,
    run: Uuid,
    rung: i32,
    action: &str,
    started_by: &str,
) -> Result<Option<StepRecord>, sqlx::Error> {
    sqlx::query_as!(
        StepRecord,
        "INSERT INTO repair_steps (id, run_id, rung, action, started_by)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (run_id) WHERE finished_at IS NULL DO NOTHING
         RETURNING *",
        Uuid::now_v7(),
        run,
        rung,
        action,
        started_by
    )
    .fetch_optional(conn)
    .await
}

/// Records what a step checked, did and how it ended.
pub struct StepOutcome<'a> {
    pub checked: &'a str,
    pub check_passed: Option<bool>,
    pub did: &'a str,
    pub result: &'a str,
}

pub async fn finish_step(
    db: impl PgExecutor<'_>,
    id: Uuid,
    o: &StepOutcome<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE repair_steps SET checked = $2, check_passed = $3, did = $4, result = $5, finished_at = now()
         WHERE id = $1 AND finished_at IS NULL",
        id,
        o.checked,
        o.check_passed,
        o.did,
        o.result
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Marks a step in flight as still worked on.
pub async fn touch_step(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE repair_steps SET alive_at = now() WHERE id = $1 AND finished_at IS NULL",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records the check of a step before its repair runs, so a worker that
/// dies during the repair leaves what it saw.
pub async fn note_check(
    db: impl PgExecutor<'_>,
    id: Uuid,
    checked: &str,
    passed: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE repair_steps SET checked = $2, check_passed = $3 WHERE id = $1 AND finished_at IS NULL",
        id,
        checked,
        passed
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn steps_of(
    db: impl PgExecutor<'_>,
    runs: &[Uuid],
) -> Result<Vec<StepRecord>, sqlx::Error> {
    sqlx::query_as!(
        StepRecord,
        "SELECT * FROM repair_steps WHERE run_id = ANY($1) ORDER BY run_id, started_at, id",
        runs
    )
    .fetch_all(db)
    .await
}

// ---- listings ----

pub struct RunFilter<'a> {
    pub status: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub subject_id: Option<Uuid>,
    pub tenant_id: Option<Uuid>,
    /// Runs with an id below this (the cursor; ids are time-ordered).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// Runs, newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    f: &RunFilter<'_>,
) -> Result<Vec<RunRecord>, sqlx::Error> {
    sqlx::query_as!(
        RunRecord,
        "SELECT * FROM repair_runs
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR kind = $2)
           AND ($3::uuid IS NULL OR subject_id = $3)
           AND ($4::uuid IS NULL OR tenant_id = $4)
           AND ($5::uuid IS NULL OR id < $5)
         ORDER BY id DESC LIMIT $6",
        f.status,
        f.kind,
        f.subject_id,
        f.tenant_id,
        f.before,
        f.limit
    )
    .fetch_all(db)
    .await
}
