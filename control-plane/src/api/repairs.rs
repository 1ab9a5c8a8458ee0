//! Repair runs over HTTP: ops list, read and steer them
//! (`/v1/ops/repairs...`); tenants read the runs about their own domains
//! (`GET /v1/domains/{id}/repairs`). Every run comes with its steps: what
//! each rung checked, what it did, and how that went.

use super::AppState;
use super::error::{ApiError, Problem};
use super::extract::{JsonBody, OperatorAuth, TenantAuth};
use super::pagination::{Page, PageParams};
use crate::db;
use crate::db::repairs::{RunFilter, RunRecord, StepRecord};
use crate::health::ladder::Kind;
use crate::health::operator::{self, OperatorError};
use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A repair run: one climb of one escalation ladder for one edge or domain.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RepairRunView {
    pub id: Uuid,
    /// `edge` or `domain`.
    pub subject_kind: String,
    pub subject_id: Uuid,
    /// The edge's name or the domain's hostname.
    pub subject_name: String,
    /// `edge_unreachable`, `certificate`, `upstream` or `dns`.
    pub kind: String,
    /// `open`, `paused` or `closed`.
    pub status: String,
    /// The failing check's words when the run opened.
    pub reason: String,
    /// The rung the run climbs next (0 is the bottom).
    pub next_rung: i32,
    /// When that rung runs (absent while paused or closed).
    pub next_step_at: Option<DateTime<Utc>>,
    /// How the run ended: `recovered`, `closed_by_operator`,
    /// `subject_gone` or `stale`.
    pub outcome: Option<String>,
    pub outcome_note: Option<String>,
    /// The alert that paged ops, if the run reached the top of its ladder.
    #[schema(nullable)]
    pub alert_id: Option<Uuid>,
    pub tenant_notified_at: Option<DateTime<Utc>>,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub steps: Vec<RepairStepView>,
}

/// One rung: the re-check, then the repair if it still failed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RepairStepView {
    pub id: Uuid,
    pub rung: i32,
    /// The repair (`probe`, `resync`, `restart`, `replace`, `page`,
    /// `repush_certificate`, `recheck_dns`, `reissue`, `fallback_issuer`,
    /// `notify_tenant`, `reprobe_upstream`, `mark_degraded`,
    /// `mark_misconfigured`, `mark_stale`, `recheck`).
    pub action: String,
    /// What the re-check saw.
    pub checked: String,
    pub check_passed: Option<bool>,
    /// What the repair did.
    pub did: String,
    /// `running`, `recovered`, `done`, `failed`, `skipped` or `interrupted`.
    pub result: String,
    /// `ladder` or `operator`.
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<StepRecord> for RepairStepView {
    fn from(s: StepRecord) -> Self {
        RepairStepView {
            id: s.id,
            rung: s.rung,
            action: s.action,
            checked: s.checked,
            check_passed: s.check_passed,
            did: s.did,
            result: s.result,
            started_by: s.started_by,
            started_at: s.started_at,
            finished_at: s.finished_at,
        }
    }
}

fn view(r: RunRecord, steps: Vec<RepairStepView>) -> RepairRunView {
    RepairRunView {
        id: r.id,
        subject_kind: r.subject_kind,
        subject_id: r.subject_id,
        subject_name: r.subject_name,
        kind: r.kind,
        status: r.status,
        reason: r.reason,
        next_rung: r.next_rung,
        next_step_at: r.next_step_at,
        outcome: r.outcome,
        outcome_note: r.outcome_note,
        alert_id: r.alert_id,
        tenant_notified_at: r.tenant_notified_at,
        opened_at: r.opened_at,
        updated_at: r.updated_at,
        closed_at: r.closed_at,
        steps,
    }
}

/// Runs with their steps, in the order given.
async fn with_steps(
    state: &AppState,
    runs: Vec<RunRecord>,
) -> Result<Vec<RepairRunView>, ApiError> {
    let ids: Vec<Uuid> = runs.iter().map(|r| r.id).collect();
    let mut steps = db::repairs::steps_of(&state.pool, &ids).await?;
    Ok(runs
        .into_iter()
        .map(|r| {
            let (mine, rest): (Vec<_>, Vec<_>) = steps.drain(..).partition(|s| s.run_id == r.id);
            steps = rest;
            let id = r.id;
            let mut v = view(r, mine.into_iter().map(RepairStepView::from).collect());
            v.id = id;
            v
        })
        .collect())
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    /// `open`, `paused` or `closed`.
    pub status: Option<String>,
    /// `edge_unreachable`, `certificate`, `upstream` or `dns`.
    pub kind: Option<String>,
    /// Runs about this edge or domain only.
    pub subject_id: Option<Uuid>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/ops/repairs", tag = "ops", params(RunParams),
    responses((status = 200, body = Page<RepairRunView>), (status = 401, body = Problem),
        (status = 422, body = Problem)),
    security(("operator_token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _op: OperatorAuth,
    params: Result<Query<RunParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<RepairRunView>>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (before, limit) = PageParams {
        limit: p.limit,
        cursor: p.cursor.clone(),
    }
    .parse()?;
    if let Some(s) = &p.status
        && !matches!(s.as_str(), "open" | "paused" | "closed")
    {
        return Err(ApiError::field(
            "status",
            "invalid",
            "status must be open, paused or closed",
        ));
    }
    if let Some(k) = &p.kind
        && Kind::parse(k).is_none()
    {
        return Err(ApiError::field(
            "kind",
            "invalid",
            "kind must be edge_unreachable, certificate, upstream or dns",
        ));
    }
    let filter = RunFilter {
        status: p.status.as_deref(),
        kind: p.kind.as_deref(),
        subject_id: p.subject_id,
        tenant_id: None,
        before,
        limit: limit + 1,
    };
    page(
        &state,
        db::repairs::list(&state.pool, &filter).await?,
        limit,
    )
    .await
}

async fn page(
    state: &AppState,
    rows: Vec<RunRecord>,
    limit: i64,
) -> Result<Json<Page<RepairRunView>>, ApiError> {
    let page = Page::from_rows(rows, limit, |r| r.id, Clone::clone);
    Ok(Json(Page {
        items: with_steps(state, page.items).await?,
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/ops/repairs/{id}", tag = "ops",
    responses((status = 200, body = RepairRunView), (status = 401, body = Problem),
        (status = 404, body = Problem)),
    security(("operator_token" = [])))]
pub async fn get(
    State(state): State<AppState>,
    _op: OperatorAuth,
    Path(id): Path<String>,
) -> Result<Json<RepairRunView>, ApiError> {
    let id = parse_id(&id)?;
    let run = db::repairs::get(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound("repair run"))?;
    one(&state, run).await
}

async fn one(state: &AppState, run: RunRecord) -> Result<Json<RepairRunView>, ApiError> {
    let mut v = with_steps(state, vec![run]).await?;
    v.pop().map(Json).ok_or(ApiError::NotFound("repair run"))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound("repair run"))
}

impl From<OperatorError> for ApiError {
    fn from(e: OperatorError) -> Self {
        match e {
            OperatorError::NotFound(_) => ApiError::NotFound("repair run"),
            OperatorError::Closed => ApiError::Conflict("the repair run is closed".into()),
            OperatorError::Db(e) => e.into(),
            OperatorError::Other(e) => ApiError::Internal(e),
        }
    }
}

/// Stops the ladder: no step runs until the run is resumed or retried.
#[utoipa::path(post, path = "/v1/ops/repairs/{id}/pause", tag = "ops",
    responses((status = 200, body = RepairRunView), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("operator_token" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    _op: OperatorAuth,
    Path(id): Path<String>,
) -> Result<Json<RepairRunView>, ApiError> {
    let run = operator::pause(&state.pool, parse_id(&id)?).await?;
    one(&state, run).await
}

/// Resumes a paused run: its next rung runs now.
#[utoipa::path(post, path = "/v1/ops/repairs/{id}/resume", tag = "ops",
    responses((status = 200, body = RepairRunView), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("operator_token" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    _op: OperatorAuth,
    Path(id): Path<String>,
) -> Result<Json<RepairRunView>, ApiError> {
    let run = operator::resume(&state.pool, parse_id(&id)?).await?;
    one(&state, run).await
}

/// Runs the last rung's repair again, now (resuming a paused run).
#[utoipa::path(post, path = "/v1/ops/repairs/{id}/retry", tag = "ops",
    responses((status = 200, body = RepairRunView), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("operator_token" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    _op: OperatorAuth,
    Path(id): Path<String>,
) -> Result<Json<RepairRunView>, ApiError> {
    let run = operator::retry(&state.pool, parse_id(&id)?).await?;
    one(&state, run).await
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    /// Why, for the run's record and the resolution email (at most 2,000 characters).
    #[serde(default)]
    pub note: String,
}

/// Closes the run for good and resolves its page.
#[utoipa::path(post, path = "/v1/ops/repairs/{id}/close", tag = "ops", request_body = CloseRequest,
    responses((status = 200, body = RepairRunView), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("operator_token" = [])))]
pub async fn close(
    State(state): State<AppState>,
    _op: OperatorAuth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CloseRequest>,
) -> Result<Json<RepairRunView>, ApiError> {
    let note = body.note;
    if note.chars().count() > 2000 {
        return Err(ApiError::field(
            "note",
            "too_long",
            "note must be at most 2,000 characters",
        ));
    }
    let run = operator::close(&state.pool, &state.alerts, parse_id(&id)?, &note).await?;
    one(&state, run).await
}

/// The repair runs about one of the tenant's domains, newest first.
#[utoipa::path(get, path = "/v1/domains/{id}/repairs", tag = "domains", params(PageParams),
    responses((status = 200, body = Page<RepairRunView>), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
pub async fn for_domain(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
    params: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<RepairRunView>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (before, limit) = params.parse()?;
    let id = id.parse().map_err(|_| ApiError::NotFound("domain"))?;
    let d = db::domains::get(&state.pool, auth.tenant.id, id)
        .await?
        .ok_or(ApiError::NotFound("domain"))?;
    let filter = RunFilter {
        status: None,
        kind: None,
        subject_id: Some(d.id),
        tenant_id: Some(d.tenant_id),
        before,
        limit: limit + 1,
    };
    page(
        &state,
        db::repairs::list(&state.pool, &filter).await?,
        limit,
    )
    .await
}
