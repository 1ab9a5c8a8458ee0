//! What a dashboard request can fail with, rendered as a small HTML page.
//! 5xx pages are opaque; the cause is logged once.

use super::view;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("the ops dashboard is disabled: set PORTICO_OPERATOR_TOKEN to enable it")]
    Disabled,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many live-update connections; the page still works without them")]
    Busy,
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

impl From<crate::api::error::ApiError> for OpsError {
    fn from(e: crate::api::error::ApiError) -> Self {
        use crate::api::error::ApiError;
        match e {
            ApiError::NotFound(what) => OpsError::NotFound(what),
            ApiError::Conflict(m) => OpsError::Conflict(m),
            ApiError::Validation { detail, .. } => OpsError::BadRequest(detail),
            other => OpsError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for OpsError {
    fn into_response(self) -> Response {
        let status = match &self {
            OpsError::Disabled | OpsError::NotFound(_) => StatusCode::NOT_FOUND,
            OpsError::Forbidden(_) => StatusCode::FORBIDDEN,
            OpsError::BadRequest(_) => StatusCode::BAD_REQUEST,
            OpsError::Conflict(_) => StatusCode::CONFLICT,
            OpsError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            OpsError::Db(_) | OpsError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = if status.is_server_error() && !matches!(self, OpsError::Busy) {
            tracing::error!(error = %self, "ops dashboard request failed");
            "Something went wrong on our side; the cause is in the control plane's log.".to_string()
        } else {
            self.to_string()
        };
        (status, view::error_page(status, &message)).into_response()
    }
}
