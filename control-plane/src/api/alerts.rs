//! `GET /v1/ops/alerts`: the alerts that paged (or would have paged) ops,
//! open ones first, newest first. The cursor carries the last row's group
//! (open or not) and id, so pages stay in that order.

use super::AppState;
use super::error::{ApiError, Problem};
use super::extract::OperatorAuth;
use super::pagination::{Page, PageParams};
use crate::db;
use crate::db::alerts::AlertRecord;
use axum::Json;
use axum::extract::{Query, State};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// An alert as operators see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertView {
    pub id: Uuid,
    /// `open` or `resolved`.
    pub status: String,
    /// `critical` or `warning`.
    pub severity: String,
    /// `edge`, `domain` or `platform`.
    pub subject_kind: String,
    pub subject_id: Option<Uuid>,
    /// Who raised it (e.g. a repair run id); one open alert per key.
    pub dedup_key: String,
    pub title: String,
    pub body: String,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution_note: Option<String>,
    pub email: EmailView,
}

/// Where the alert's emails stand.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmailView {
    pub page_sent_at: Option<DateTime<Utc>>,
    pub page_attempts: i32,
    pub resolution_sent_at: Option<DateTime<Utc>>,
    pub resolution_attempts: i32,
    /// When the next send is due, if one is.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// The retry schedule ran out.
    pub gave_up_at: Option<DateTime<Utc>>,
}

impl From<&AlertRecord> for AlertView {
    fn from(r: &AlertRecord) -> Self {
        AlertView {
            id: r.id,
            status: r.status.clone(),
            severity: r.severity.clone(),
            subject_kind: r.subject_kind.clone(),
            subject_id: r.subject_id,
            dedup_key: r.dedup_key.clone(),
            title: r.title.clone(),
            body: r.body.clone(),
            opened_at: r.opened_at,
            resolved_at: r.resolved_at,
            resolution_note: r.resolution_note.clone(),
            email: EmailView {
                page_sent_at: r.page_sent_at,
                page_attempts: r.page_attempts,
                resolution_sent_at: r.resolution_sent_at,
                resolution_attempts: r.resolution_attempts,
                next_attempt_at: r.next_email_at,
                last_error: r.last_email_error.clone(),
                last_error_at: r.last_email_error_at,
                gave_up_at: r.email_gave_up_at,
            },
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertPage {
    pub items: Vec<AlertView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/ops/alerts", tag = "ops", params(PageParams),
    responses((status = 200, body = AlertPage), (status = 401, body = Problem),
        (status = 422, body = Problem)),
    security(("operator_token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _op: OperatorAuth,
    params: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AlertPage>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (_, limit) = PageParams {
        limit: params.limit,
        cursor: None,
    }
    .parse()?;
    let after = match &params.cursor {
        None => None,
        Some(c) => Some(decode(c).ok_or_else(super::pagination::invalid_cursor)?),
    };
    let rows = db::alerts::list(&state.pool, after, limit + 1).await?;
    let page = Page::from_rows(rows, limit, |r| r.id, |r| AlertView::from(r));
    // The generic cursor holds the id only; ours also holds the group.
    let next_cursor = page.next_cursor.as_ref().and_then(|_| {
        page.items
            .last()
            .map(|last| encode(last.status == "open", last.id))
    });
    Ok(Json(AlertPage {
        items: page.items,
        next_cursor,
    }))
}

fn encode(open: bool, id: Uuid) -> String {
    let mut bytes = vec![u8::from(open)];
    bytes.extend_from_slice(id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode(cursor: &str) -> Option<(bool, Uuid)> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let (open, id) = bytes.split_first()?;
    let open = match open {
        0 => false,
        1 => true,
        _ => return None,
    };
    Some((open, Uuid::from_slice(id).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_others() {
        let id = Uuid::now_v7();
        assert_eq!(decode(&encode(true, id)), Some((true, id)));
        assert_eq!(decode(&encode(false, id)), Some((false, id)));
        assert_eq!(decode(&super::super::pagination::encode(id)), None);
        assert_eq!(decode("!!"), None);
    }
}
