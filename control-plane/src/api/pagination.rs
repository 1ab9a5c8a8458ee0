//! Cursor pagination: results ordered by id (UUIDv7, so by creation time); the
//! cursor is the opaque encoding of the last id on a page.

use super::error::ApiError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct PageParams {
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl PageParams {
    /// The id to start after, and the page size.
    pub fn parse(&self) -> Result<(Option<Uuid>, i64), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::field(
                "limit",
                "out_of_range",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let after = match &self.cursor {
            None => None,
            Some(c) => Some(decode(c).ok_or_else(invalid_cursor)?),
        };
        Ok((after, limit))
    }
}

fn decode(cursor: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    Uuid::from_slice(&bytes).ok()
}

pub fn encode(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

impl<T> Page<T> {
    /// `rows` were fetched with `limit + 1` to learn whether a next page exists.
    pub fn from_rows<R>(
        mut rows: Vec<R>,
        limit: i64,
        id: impl Fn(&R) -> Uuid,
        view: impl Fn(&R) -> T,
    ) -> Page<T> {
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        Page {
            next_cursor: if more {
                rows.last().map(|r| encode(id(r)))
            } else {
                None
            },
            items: rows.iter().map(view).collect(),
        }
    }
}

/// The error for a `cursor` this API did not issue (or that was altered).
pub fn invalid_cursor() -> ApiError {
    ApiError::field(
        "cursor",
        "invalid_cursor",
        "the cursor is not one we issued",
    )
}
