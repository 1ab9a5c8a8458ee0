//! Operator actions on repair runs from the dashboard: pause, resume,
//! retry, close. Each is a POST form (CSRF token + same-origin check) that
//! calls the same functions as the JSON routes `POST /v1/ops/repairs/{id}/*`,
//! then sends the browser back where it was.

use super::OpsState;
use super::error::OpsError;
use super::session::{Session, check_post};
use axum::Form;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Redirect;
use serde::Deserialize;
use uuid::Uuid;

#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    back: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Retry,
    Close,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "retry" => Some(Action::Retry),
            "close" => Some(Action::Close),
            _ => None,
        }
    }
}

pub async fn run_action(
    State(state): State<OpsState>,
    headers: HeaderMap,
    session: Session,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Result<Redirect, OpsError> {
    check_post(&state, &headers, Some(&session), &form.csrf)?;
    let run = Uuid::parse_str(&id).map_err(|_| OpsError::NotFound("repair run"))?;
    let action = Action::parse(&action).ok_or(OpsError::NotFound("action"))?;
    apply(&state, run, action).await?;
    Ok(Redirect::to(safe_back(&form.back)))
}

/// Who the run's history names as having acted.
const BY: &str = "operator:dashboard";

async fn apply(state: &OpsState, run: Uuid, action: Action) -> Result<(), OpsError> {
    let _ = (state, run, action, BY);
    Err(OpsError::Internal(
        "operator actions arrive with the health module (crate::health::operator)".into(),
    ))
}

/// Only a path inside the dashboard: never another site.
fn safe_back(back: &str) -> &str {
    let inside = back.starts_with("/ops") && !back.starts_with("//") && !back.contains('\\');
    if inside && back.len() <= 1000 {
        back
    } else {
        "/ops/repairs"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_stays_inside_the_dashboard() {
        assert_eq!(
            safe_back("/ops/repairs?status=open"),
            "/ops/repairs?status=open"
        );
        assert_eq!(safe_back("https://evil.example/ops"), "/ops/repairs");
        assert_eq!(safe_back("//evil.example/ops"), "/ops/repairs");
        assert_eq!(safe_back(""), "/ops/repairs");
    }

    #[test]
    fn actions_parse() {
        assert_eq!(Action::parse("retry"), Some(Action::Retry));
        assert_eq!(Action::parse("delete"), None);
    }
}
