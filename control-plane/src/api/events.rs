//! `GET /v1/events`: the tenant's outbox, oldest first, cursor-paginated.

use super::AppState;
use super::error::{ApiError, Problem};
use super::extract::TenantAuth;
use super::pagination::{Page, PageParams};
use crate::db;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    /// e.g. `domain.created`, `domain.verified`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    /// The resource as the API returns it, at the time of the event.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(PageParams),
    responses((status = 200, body = Page<EventView>), (status = 401, body = Problem)), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    auth: TenantAuth,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Page<EventView>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (after, limit) = params.parse()?;
    let rows = db::events::list(&state.pool, auth.tenant.id, after, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |e| e.id.as_uuid(),
        |e| EventView {
            id: e.id.as_uuid(),
            event_type: e.event_type.clone(),
            timestamp: e.created_at,
            data: e.data.clone(),
        },
    )))
}
