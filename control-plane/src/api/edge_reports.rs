//! `POST /internal/v1/edge/reports`: an edge's batch of traffic windows.
//! Checked ([`crate::traffic::validate`]), then queued as one
//! `ingest_report` job; nothing else is written while the edge waits.

use super::AppState;
use super::edges::EdgeAuth;
use super::error::{ApiError, Problem};
use super::extract::JsonBody;
use crate::jobs::ingest::{self, IngestReport};
use axum::extract::State;
use axum::http::StatusCode;
use portico_protocol::Report;

/// The largest report body accepted (2,000 windows take about 1 MiB).
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;
pub const PATH: &str = "/internal/v1/edge/reports";

/// Queues an edge's traffic windows for ingestion. `edge_id` must be the
/// calling edge's registered name; at most 5,000 windows, each 1-3600 s
/// long, starting no more than an hour ahead and no older than
/// `PORTICO_TRAFFIC_RETENTION_HOURS`. A window sent again overwrites the
/// stored one.
#[utoipa::path(post, path = "/internal/v1/edge/reports", tag = "edge",
    responses((status = 202, description = "queued for ingestion (body: a portico-protocol Report)"),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem),
        (status = 422, body = Problem)),
    security(("edge_token" = [])))]
pub async fn report(
    State(state): State<AppState>,
    edge: EdgeAuth,
    JsonBody(report): JsonBody<Report>,
) -> Result<StatusCode, ApiError> {
    let retention = state.settings.traffic.retention;
    crate::traffic::validate(&report, &edge.name, chrono::Utc::now(), retention)
        .map_err(ApiError::from_fields)?;
    let windows = report.windows.len();
    let job = IngestReport {
        edge_id: edge.id.as_uuid(),
        report,
    };
    ingest::enqueue(&state.pool, &job)
        .await
        .map_err(ApiError::Internal)?;
    tracing::debug!(edge = %edge.name, windows, "traffic report queued");
    Ok(StatusCode::ACCEPTED)
}
