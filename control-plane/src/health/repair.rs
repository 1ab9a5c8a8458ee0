//! Climbing a ladder: one `repair_step` job runs one rung of one run.
//!
//! Lock the run → skip if it is paused, closed, or already past this rung
//! (a duplicate job) → record an interrupted step left by a dead worker →
//! start the step (at most one in flight per run, by a unique index) →
//! re-check → if it passes, close the run as recovered; else run the rung's
//! repair, record what it did, and schedule the next rung after the rung's
//! wait (a skipped rung costs no wait). Every repair is idempotent, so a
//! rung that runs again after a crash does no harm.

use super::checks::{self, Check, UpstreamProbe};
use super::ladder::{Action, Kind, Rung, rung_at};
use crate::alerts::{Alerts, Subject};
use crate::db;
use crate::db::repairs::{RunRecord, StepOutcome};
use crate::ids::{DomainId, EdgeId, TenantId};
use crate::infra::{Infra, Machine, Probe, wait_until_ready};
use crate::jobs::JobContext;
use chrono::Utc;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// How long a restart or replace waits for the edge to serve before the
/// step ends (the next rung's re-check decides either way).
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Who started a step.
pub const BY_LADDER: &str = "ladder";
pub const BY_OPERATOR: &str = "operator";

/// Runs rung `rung` of run `run_id`, if that is still the run's next rung.
pub async fn run_step(ctx: &JobContext, run_id: Uuid, rung: i32, by: &str) -> anyhow::Result<()> {
    let mut tx = ctx.pool.begin().await?;
    let Some(run) = db::repairs::lock(&mut tx, run_id).await? else {
        return Ok(());
    };
    if run.status != "open" || run.next_rung != rung {
        tracing::debug!(run = %run_id, rung, status = %run.status, next = run.next_rung, "step not due; skipped");
        return Ok(());
    }
    if let Some(step) = db::repairs::running_step(&mut tx, run_id).await? {
        let lease = chrono::Duration::from_std(ctx.settings.health.step_lease)
            .unwrap_or(chrono::Duration::MAX);
        if Utc::now() - step.alive_at < lease {
            tracing::info!(run = %run_id, step = %step.id, "a step of this run is in flight elsewhere");
            return Ok(());
        }
        db::repairs::finish_step(
            &mut *tx,
            step.id,
            &StepOutcome {
                checked: &step.checked,
                check_passed: step.check_passed,
                did: "the worker running this step stopped before it finished; the rung runs again",
                result: "interrupted",
            },
        )
        .await?;
    }
    let Some(kind) = Kind::parse(&run.kind) else {
        anyhow::bail!("run {run_id} has an unknown kind {:?}", run.kind);
    };
    let index = usize::try_from(rung).unwrap_or(usize::MAX);
    let current = rung_at(kind, index);
    let Some(step) =
        db::repairs::start_step(&mut tx, run_id, rung, current.action.as_str(), by).await?
    else {
        return Ok(());
    };
    tx.commit().await?;
    let _alive = KeepAlive::start(ctx, step.id);

    let Some(check) = recheck(ctx, &run, kind).await? else {
        db::repairs::finish_step(
            &ctx.pool,
            step.id,
            &outcome("the subject is gone", None, "", "skipped"),
        )
        .await?;
        close(ctx, &run, "subject_gone", "the subject was deleted").await?;
        return Ok(());
    };
    db::repairs::note_check(&ctx.pool, step.id, &check.detail, check.passed).await?;
    if check.passed {
        db::repairs::finish_step(
            &ctx.pool,
            step.id,
            &outcome(
                &check.detail,
                Some(true),
                "nothing: the re-check passed",
                "recovered",
            ),
        )
        .await?;
        close(ctx, &run, "recovered", &check.detail).await?;
        return Ok(());
    }

    let done = if ctx.settings.health.action_enabled(current.action.as_str()) {
        act(ctx, &run, kind, current.action).await
    } else {
        Repaired::skipped(format!(
            "{} is disabled (PORTICO_REPAIR_DISABLED_ACTIONS)",
            current.action.as_str()
        ))
    };
    db::repairs::finish_step(
        &ctx.pool,
        step.id,
        &outcome(&check.detail, Some(false), &done.did, done.result),
    )
    .await?;
    tracing::info!(run = %run_id, subject = %run.subject_name, kind = kind.as_str(), rung,
        action = current.action.as_str(), result = done.result, did = %done.did, "repair step");
    if done.closes {
        close(ctx, &run, "stale", &done.did).await?;
        return Ok(());
    }
    schedule_next(ctx, &run, rung, wait_after(ctx, kind, current, &done)).await
}

/// Touches the step every third of the lease while it runs, so that only a
/// worker that died loses it. Stops when dropped.
struct KeepAlive(tokio::task::JoinHandle<()>);

impl KeepAlive {
    fn start(ctx: &JobContext, step: Uuid) -> KeepAlive {
        let pool = ctx.pool.clone();
        let every = (ctx.settings.health.step_lease / 3).max(Duration::from_millis(100));
        KeepAlive(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await; // allow-sleep: a heartbeat
                if let Err(e) = db::repairs::touch_step(&pool, step).await {
                    tracing::warn!(%step, error = %e, "could not mark the repair step alive");
                }
            }
        }))
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a repair did.
struct Repaired {
    did: String,
    /// `done`, `failed` or `skipped`.
    result: &'static str,
    /// The run ends here (the DNS ladder's `mark_stale`).
    closes: bool,
}

impl Repaired {
    fn done(did: impl Into<String>) -> Repaired {
        Repaired {
            did: did.into(),
            result: "done",
            closes: false,
        }
    }
    fn failed(did: impl Into<String>) -> Repaired {
        Repaired {
            did: did.into(),
            result: "failed",
            closes: false,
        }
    }
    fn skipped(did: impl Into<String>) -> Repaired {
        Repaired {
            did: did.into(),
            result: "skipped",
            closes: false,
        }
    }
}

fn outcome<'a>(
    checked: &'a str,
    passed: Option<bool>,
    did: &'a str,
    result: &'a str,
) -> StepOutcome<'a> {
    StepOutcome {
        checked,
        check_passed: passed,
        did,
        result,
    }
}

/// How long to wait after a rung: none after a skipped one, the DNS stale
/// period after `mark_misconfigured`, else the rung's wait; all scaled.
fn wait_after(ctx: &JobContext, kind: Kind, rung: Rung, done: &Repaired) -> Duration {
    let s = &ctx.settings.health;
    if done.result == "skipped" {
        return Duration::ZERO;
    }
    if kind == Kind::Dns && rung.action == Action::MarkMisconfigured {
        return s.scaled(s.dns_stale_after);
    }
    s.scaled(rung.wait)
}

async fn schedule_next(
    ctx: &JobContext,
    run: &RunRecord,
    rung: i32,
    wait: Duration,
) -> anyhow::Result<()> {
    let mut tx = ctx.pool.begin().await?;
    let Some(current) = db::repairs::lock(&mut tx, run.id).await? else {
        return Ok(());
    };
    // Paused, closed or moved on (an operator's retry) meanwhile: theirs wins.
    if current.status == "closed" || current.next_rung != rung {
        return Ok(());
    }
    let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
    db::repairs::advance(&mut tx, run.id, rung + 1, Some(at)).await?;
    if current.status == "open" {
        crate::jobs::repair::enqueue(&mut tx, run.id, rung + 1, wait).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Closes a run (once), resolves its page, and tells the tenant it
/// recovered if it was told it degraded.
pub async fn close(
    ctx: &JobContext,
    run: &RunRecord,
    outcome: &str,
    note: &str,
) -> anyhow::Result<()> {
    close_run(&ctx.pool, &ctx.alerts, run.id, outcome, note).await
}

pub async fn close_run(
    pool: &sqlx::PgPool,
    alerts: &Alerts,
    run_id: Uuid,
    outcome: &str,
    note: &str,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let Some(closed) = db::repairs::close(&mut *tx, run_id, outcome, note).await? else {
        return Ok(());
    };
    if outcome == "recovered"
        && closed.tenant_notified_at.is_some()
        && let Some(tenant) = closed.tenant_id
    {
        db::events::append(
            &mut *tx,
            TenantId::from_uuid(tenant),
            db::events::EventType::HealthRecovered,
            closed.subject_id,
            &event_data(&closed, note),
        )
        .await?;
    }
    tx.commit().await?;
    tracing::info!(run = %run_id, subject = %closed.subject_name, kind = %closed.kind, outcome, "repair run closed");
    if closed.alert_id.is_some() {
        let why = format!("{} ({outcome}): {note}", closed.subject_name);
        alerts.resolve(&dedup_key(run_id), &why).await?;
    }
    Ok(())
}

/// The alert dedup key of a run: one page per run.
pub fn dedup_key(run: Uuid) -> String {
    format!("repair:{run}")
}

fn event_data(run: &RunRecord, detail: &str) -> serde_json::Value {
    json!({
        "run_id": run.id,
        "kind": run.kind,
        "hostname": run.subject_name,
        "reason": run.reason,
        "detail": detail,
        "opened_at": run.opened_at,
    })
}

/// The check for `kind` on the run's subject, now; `None` if the subject is gone.
async fn recheck(ctx: &JobContext, run: &RunRecord, kind: Kind) -> anyhow::Result<Option<Check>> {
    let s = &ctx.settings;
    if kind == Kind::EdgeUnreachable {
        let window = s.health.traffic_window.as_secs_f64();
        let Some((edge, version)) =
            db::health::edge_snapshot(&ctx.pool, run.subject_id, window).await?
        else {
            return Ok(None);
        };
        let probe = match machine_of(ctx, &edge.name).await {
            Some((infra, m)) => infra.probe(&m.id).await.ok(),
            None => None,
        };
        return Ok(Some(checks::edge(
            &edge,
            version,
            probe.as_ref(),
            &s.health,
            s.config.edge_stale_after,
            Utc::now(),
        )));
    }
    let Some(d) = db::health::domain_snapshot(
        &ctx.pool,
        run.subject_id,
        s.config.edge_stale_after.as_secs_f64(),
        s.health.traffic_window.as_secs_f64(),
    )
    .await?
    else {
        return Ok(None);
    };
    let probe = if kind == Kind::Upstream && d.traffic.requests < i64::from(s.health.min_requests) {
        Some(probe_upstream(&d.targets, s.health.probe_timeout).await)
    } else {
        None
    };
    let found = checks::domain(&d, probe.as_ref(), &s.health, Utc::now())
        .into_iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, c)| c);
    // A kind that no longer applies (the domain's DNS broke, so its
    // upstream is not checked) counts as not failing for this run.
    Ok(Some(found.unwrap_or_else(|| Check {
        passed: true,
        detail: format!(
            "the {} check no longer applies (domain is {})",
            kind.as_str(),
            d.status
        ),
        data: json!({}),
    })))
}

/// The infra machine running the edge named `name`, if an adapter manages it.
async fn machine_of<'a>(ctx: &'a JobContext, name: &str) -> Option<(&'a dyn Infra, Machine)> {
    let infra = ctx.infra.as_deref()?;
    match infra.list().await {
        Ok(machines) => machines
            .into_iter()
            .find(|m| m.name == name)
            .map(|m| (infra, m)),
        Err(e) => {
            tracing::warn!(error = %e, "infra: listing machines failed");
            None
        }
    }
}

/// Connects to the first target that answers, trying each in turn.
pub async fn probe_upstream(targets: &[String], timeout: Duration) -> UpstreamProbe {
    let mut last = UpstreamProbe::NoTarget;
    for t in targets.iter().take(4) {
        let Some(target) = crate::target::Target::from_stored(t) else {
            continue;
        };
        let addr = target.to_string();
        let started = std::time::Instant::now();
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str())).await {
            Ok(Ok(_)) => {
                return UpstreamProbe::Connected {
                    target: addr,
                    ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                };
            }
            Ok(Err(e)) => {
                last = UpstreamProbe::Failed {
                    target: addr,
                    error: e.to_string(),
                }
            }
            Err(_) => {
                last = UpstreamProbe::Failed {
                    target: addr,
                    error: format!("no answer within {} ms", timeout.as_millis()),
                };
            }
        }
    }
    last
}

/// Runs one repair. Never fails the job: what went wrong is the step's record.
async fn act(ctx: &JobContext, run: &RunRecord, kind: Kind, action: Action) -> Repaired {
    match act_inner(ctx, run, kind, action).await {
        Ok(done) => done,
        Err(e) => Repaired::failed(format!("{}: {e:#}", action.as_str())),
    }
}

async fn act_inner(
    ctx: &JobContext,
    run: &RunRecord,
    kind: Kind,
    action: Action,
) -> anyhow::Result<Repaired> {
    Ok(match action {
        Action::Probe => match machine_of(ctx, &run.subject_name).await {
            None => Repaired::skipped("no infra adapter manages this edge"),
            Some((infra, m)) => Repaired::done(format!(
                "probed machine {}: {}",
                m.id,
                infra.probe(&m.id).await?
            )),
        },
        Action::Resync => {
            if let Some((infra, m)) = machine_of(ctx, &run.subject_name).await
                && let Probe::Down(why) = infra.probe(&m.id).await?
            {
                return Ok(Repaired::skipped(format!(
                    "machine {} does not run ({why}): a resync cannot reach it",
                    m.id
                )));
            }
            match db::health::request_resync(&ctx.pool, run.subject_id).await? {
                Some(name) => Repaired::done(format!("asked edge {name} to take a full snapshot")),
                None => Repaired::skipped("the edge is no longer registered"),
            }
        }
        Action::Restart => match machine_of(ctx, &run.subject_name).await {
            None => Repaired::skipped("no infra adapter manages this edge"),
            Some((infra, m)) => {
                let after = infra.restart(&m.id).await?;
                let probe = wait_until_ready(infra, &after.id, READY_WITHIN).await?;
                Repaired::done(format!("restarted machine {}; then {probe}", after.id))
            }
        },
        Action::Replace => match machine_of(ctx, &run.subject_name).await {
            None => Repaired::skipped("no infra adapter manages this edge"),
            Some((infra, m)) => {
                let after = infra.replace(&m.id).await?;
                let probe = wait_until_ready(infra, &after.id, READY_WITHIN).await?;
                Repaired::done(format!(
                    "replaced machine {} with {}; then {probe}",
                    m.id, after.id
                ))
            }
        },
        Action::Page => page(ctx, run, kind).await?,
        Action::RepushCertificate => {
            let mut tx = ctx.pool.begin().await?;
            let v = db::config::publish(
                &mut tx,
                &[db::config::ConfigKey::Certificate(run.subject_name.clone())],
            )
            .await?;
            tx.commit().await?;
            Repaired::done(format!(
                "published the certificate for {} to every edge again (config v{})",
                run.subject_name,
                v.unwrap_or(0)
            ))
        }
        Action::RecheckDns => {
            let checked = crate::verification::check_domain(
                &ctx.pool,
                &ctx.settings,
                &ctx.dns,
                DomainId::from_uuid(run.subject_id),
            )
            .await?;
            match checked {
                None => Repaired::skipped("the domain is gone"),
                Some(c) => Repaired::done(format!(
                    "checked DNS again: {:?}; the domain is {}. {}",
                    c.diagnosis.verdict, c.domain.status, c.diagnosis.hint
                )),
            }
        }
        Action::Reissue => {
            let mut tx = ctx.pool.begin().await?;
            db::orders::request(&mut tx, run.subject_id, "repair").await?;
            tx.commit().await?;
            Repaired::done("queued a new certificate order (the CA rate budget still applies)")
        }
        Action::FallbackIssuer => match &ctx.settings.certificates.issuer {
            crate::settings::IssuerSetting::Acme {
                fallback: Some(f), ..
            } => {
                let mut tx = ctx.pool.begin().await?;
                db::orders::request(&mut tx, run.subject_id, "repair").await?;
                db::orders::set_failures(
                    &mut *tx,
                    run.subject_id,
                    i32::try_from(f.after).unwrap_or(i32::MAX),
                )
                .await?;
                tx.commit().await?;
                Repaired::done(format!(
                    "queued an order for the fallback CA {}",
                    f.directory_url
                ))
            }
            _ => Repaired::skipped("no fallback CA is configured"),
        },
        Action::NotifyTenant | Action::MarkDegraded | Action::MarkMisconfigured => {
            notify_tenant(ctx, run).await?
        }
        Action::ReprobeUpstream => {
            let targets = db::domains::find(&ctx.pool, DomainId::from_uuid(run.subject_id))
                .await?
                .map(|d| d.targets)
                .unwrap_or_default();
            match probe_upstream(&targets, ctx.settings.health.probe_timeout).await {
                UpstreamProbe::Connected { target, ms } => Repaired::done(format!(
                    "the control plane reaches {target} ({ms} ms): the failures are in what it answers or on the edges' path"
                )),
                UpstreamProbe::Failed { target, error } => Repaired::done(format!(
                    "the control plane cannot reach {target} either: {error}"
                )),
                UpstreamProbe::NoTarget => Repaired::skipped("the domain has no target to probe"),
            }
        }
        Action::MarkStale => {
            let mut tx = ctx.pool.begin().await?;
            let Some(d) = db::domains::mark_one_stale(&mut *tx, run.subject_id).await? else {
                return Ok(Repaired::skipped("the domain is no longer misconfigured"));
            };
            let data = crate::api::domains::DomainView::new(&ctx.settings, &d).to_json();
            db::events::append(
                &mut *tx,
                TenantId::from_uuid(d.tenant_id),
                db::events::EventType::DomainStale,
                d.id,
                &data,
            )
            .await?;
            db::config::publish(&mut tx, &db::config::ConfigKey::both(&d.hostname)).await?;
            tx.commit().await?;
            Repaired {
                did: format!(
                    "marked {} stale: its DNS stayed away (the customer's choice; nobody paged)",
                    d.hostname
                ),
                result: "done",
                closes: true,
            }
        }
        Action::Recheck => Repaired::done(
            "still failing; re-checking until it passes or an operator closes the run",
        ),
    })
}

/// `health.degraded` for the tenant, once per run.
async fn notify_tenant(ctx: &JobContext, run: &RunRecord) -> anyhow::Result<Repaired> {
    let Some(tenant) = run.tenant_id else {
        return Ok(Repaired::skipped("an edge has no tenant to tell"));
    };
    let mut tx = ctx.pool.begin().await?;
    if !db::repairs::mark_notified(&mut *tx, run.id).await? {
        return Ok(Repaired::skipped("the tenant was already told in this run"));
    }
    db::events::append(
        &mut *tx,
        TenantId::from_uuid(tenant),
        db::events::EventType::HealthDegraded,
        run.subject_id,
        &event_data(run, &run.reason),
    )
    .await?;
    tx.commit().await?;
    Ok(Repaired::done("told the tenant: health.degraded"))
}

async fn page(ctx: &JobContext, run: &RunRecord, kind: Kind) -> anyhow::Result<Repaired> {
    let subject = match run.subject_kind.as_str() {
        "edge" => Subject::Edge(EdgeId::from_uuid(run.subject_id)),
        _ => Subject::Domain(DomainId::from_uuid(run.subject_id)),
    };
    if kind == Kind::Certificate {
        notify_tenant(ctx, run).await?;
    }
    let steps = db::repairs::steps_of(&ctx.pool, &[run.id]).await?;
    let mut body = format!(
        "{} {} has been failing since {} and the ladder could not repair it.\n\nWhy: {}\n\nSteps:\n",
        run.subject_kind, run.subject_name, run.opened_at, run.reason
    );
    for s in &steps {
        body.push_str(&format!(
            "- {} {} [{}]: checked: {}; did: {}\n",
            s.started_at.format("%H:%M:%S"),
            s.action,
            s.result,
            s.checked,
            s.did
        ));
    }
    body.truncate(9_000);
    let title: String = format!("{} {}: {}", kind.as_str(), run.subject_name, run.reason)
        .chars()
        .take(200)
        .collect();
    let outcome = ctx
        .alerts
        .page(&dedup_key(run.id), subject, &title, &body)
        .await?;
    db::repairs::set_alert(&ctx.pool, run.id, outcome.alert.id).await?;
    Ok(Repaired::done(format!(
        "paged ops (alert {}, email: {:?})",
        outcome.alert.id, outcome.email
    )))
}
