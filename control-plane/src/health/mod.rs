//! Health checks and escalating self-repair (`docs/health.md`).
//!
//! - [`checks`]: what "healthy" means for an edge and for a domain, as pure
//!   functions of what was read.
//! - [`ladder`]: the escalation ladders, as data.
//! - [`repair`]: one rung of one run (the `repair_step` job's body).
//! - [`operator`]: pause, resume, retry and close, for the API and the
//!   dashboard.
//!
//! This file holds the two check job bodies (`edge_health`, `host_health`):
//! read, evaluate, record with hysteresis, and open a repair run when a
//! check starts failing (or close it when the check recovers).

pub mod checks;
pub mod ladder;
pub mod operator;
pub mod repair;

use crate::db;
use crate::db::health::CheckResult;
use crate::jobs::JobContext;
use chrono::Utc;
use ladder::Kind;
use sqlx::PgPool;
use uuid::Uuid;

/// One edge's check. Returns whether it passed (`None`: the edge is gone).
pub async fn check_edge(ctx: &JobContext, id: Uuid) -> anyhow::Result<Option<bool>> {
    let window = ctx.settings.health.traffic_window.as_secs_f64();
    let Some((edge, version)) = db::health::edge_snapshot(&ctx.pool, id, window).await? else {
        return Ok(None);
    };
    let probe = match &ctx.infra {
        Some(infra) => match infra.list().await {
            Ok(machines) => match machines.iter().find(|m| m.name == edge.name) {
                Some(m) => infra.probe(&m.id).await.ok(),
                None => None,
            },
            Err(e) => {
                tracing::warn!(error = %e, "infra: listing machines failed");
                None
            }
        },
        None => None,
    };
    let check = checks::edge(
        &edge,
        version,
        probe.as_ref(),
        &ctx.settings.health,
        ctx.settings.config.edge_stale_after,
        Utc::now(),
    );
    let passed = check.passed;
    let subject = Subject {
        kind: "edge",
        id,
        tenant: None,
        name: &edge.name,
    };
    record(ctx, &subject, &[(Kind::EdgeUnreachable, check)]).await?;
    Ok(Some(passed))
}

/// One domain's checks (DNS, certificate, upstream). Returns how many
/// failed (`None`: the domain is gone).
pub async fn check_domain(ctx: &JobContext, id: Uuid) -> anyhow::Result<Option<usize>> {
    let s = &ctx.settings;
    let Some(d) = db::health::domain_snapshot(
        &ctx.pool,
        id,
        s.config.edge_stale_after.as_secs_f64(),
        s.health.traffic_window.as_secs_f64(),
    )
    .await?
    else {
        return Ok(None);
    };
    let probe = if d.status == "active" && d.traffic.requests < i64::from(s.health.min_requests) {
        Some(repair::probe_upstream(&d.targets, s.health.probe_timeout).await)
    } else {
        None
    };
    let results = checks::domain(&d, probe.as_ref(), &s.health, Utc::now());
    let failed = results.iter().filter(|(_, c)| !c.passed).count();
    let subject = Subject {
        kind: "domain",
        id,
        tenant: Some(d.tenant_id),
        name: &d.hostname,
    };
    record(ctx, &subject, &results).await?;
    Ok(Some(failed))
}

/// What was checked.
struct Subject<'a> {
    kind: &'static str,
    id: Uuid,
    tenant: Option<Uuid>,
    name: &'a str,
}

/// Stores the results of one subject in one transaction; opens a run for
/// each check that starts failing (its first step enqueued in the same
/// transaction) and closes the run of each that recovers.
async fn record(
    ctx: &JobContext,
    subject: &Subject<'_>,
    results: &[(Kind, checks::Check)],
) -> anyhow::Result<()> {
    let h = &ctx.settings.health;
    let stored: Vec<CheckResult<'_>> = results
        .iter()
        .map(|(kind, check)| CheckResult {
            kind: kind.as_str(),
            passed: check.passed,
            detail: &check.detail,
            data: &check.data,
        })
        .collect();
    let mut tx = ctx.pool.begin().await?;
    let transitions = db::health::record(
        &mut *tx,
        subject.kind,
        subject.id,
        &stored,
        h.fail_threshold,
        h.pass_threshold,
    )
    .await?;
    let mut recovered = Vec::new();
    for ((kind, check), t) in results.iter().zip(transitions) {
        if t.closed() {
            recovered.push((*kind, check));
        }
        if !t.opened() {
            continue;
        }
        let new = db::repairs::NewRun {
            subject_kind: subject.kind,
            subject_id: subject.id,
            tenant_id: subject.tenant,
            subject_name: subject.name,
            kind: kind.as_str(),
            reason: &check.detail,
        };
        if let Some(run) = db::repairs::open(&mut *tx, &new).await? {
            crate::jobs::repair::enqueue(&mut tx, run.id, 0, std::time::Duration::ZERO).await?;
            tracing::warn!(run = %run.id, subject = subject.name, kind = kind.as_str(),
                reason = %check.detail, "check failing; repair run opened");
        }
    }
    tx.commit().await?;
    for (kind, check) in recovered {
        if let Some(run) = db::repairs::find_unclosed(&ctx.pool, subject.id, kind.as_str()).await? {
            repair::close(ctx, &run, "recovered", &check.detail).await?;
        }
    }
    Ok(())
}

/// Housekeeping for the fan-out tick: re-enqueues steps whose job was lost
/// (a worker died holding it), closes runs whose subject is gone, forgets
/// check states of deleted subjects.
pub async fn housekeeping(ctx: &JobContext) -> anyhow::Result<()> {
    let grace = ctx.settings.health.step_lease.as_secs_f64();
    let mut tx = ctx.pool.begin().await?;
    let overdue = db::repairs::claim_overdue(&mut tx, grace, 100).await?;
    for (run, rung) in &overdue {
        crate::jobs::repair::enqueue(&mut tx, *run, *rung, std::time::Duration::ZERO).await?;
    }
    tx.commit().await?;
    if !overdue.is_empty() {
        tracing::info!(count = overdue.len(), "re-enqueued overdue repair steps");
    }
    for run in db::repairs::orphaned(&ctx.pool).await? {
        repair::close_run(
            &ctx.pool,
            &ctx.alerts,
            run,
            "subject_gone",
            "the subject was deleted",
        )
        .await?;
    }
    prune(&ctx.pool).await
}

async fn prune(pool: &PgPool) -> anyhow::Result<()> {
    db::health::prune_gone(pool).await?;
    Ok(())
}
