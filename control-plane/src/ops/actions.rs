//! Operator actions on repair runs from the dashboard: pause, resume,
//! retry, close. Each is a POST form (CSRF token + same-origin check) that
//! calls the same functions as the JSON routes `POST /v1/ops/repairs/{id}/*`,
//! then sends the browser back where it was.

use super::OpsState;
use super::error::OpsError;
use super::session::{Session, check_post};
use crate::health::operator::{self, OperatorError};
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

/// The same functions as `POST /v1/ops/repairs/{id}/*` (they record the
/// operator as who started a retried or resumed step).
async fn apply(state: &OpsState, run: Uuid, action: Action) -> Result<(), OpsError> {
    let pool = &state.app.pool;
    let done = match action {
        Action::Pause => operator::pause(pool, run).await,
        Action::Resume => operator::resume(pool, run).await,
        Action::Retry => operator::retry(pool, run).await,
        Action::Close => operator::close(pool, &state.app.alerts, run, CLOSE_NOTE).await,
    };
    match done {
        Ok(_) => Ok(()),
        Err(OperatorError::NotFound(_)) => Err(OpsError::NotFound("repair run")),
        Err(OperatorError::Closed) => Err(OpsError::Conflict("the repair run is closed".into())),
        Err(OperatorError::Db(e)) => Err(OpsError::Db(e)),
        Err(OperatorError::Other(e)) => Err(OpsError::Internal(format!("{e:#}"))),
    }
}

/// The run's outcome note and the resolution email say who closed it.
const CLOSE_NOTE: &str = "closed by an operator from the ops dashboard";

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
