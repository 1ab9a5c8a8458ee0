//! The Fly Machines REST API (`api.machines.dev`, v1) as typed calls: one
//! function per endpoint the adapter uses, each bounded by a timeout and
//! retried when that is safe. Only this file builds requests, so only this
//! file touches the token (in the `Authorization` header, marked sensitive).
//!
//! Retries: `429 Too Many Requests` (waiting `Retry-After`, capped) and
//! connection failures (nothing reached Fly) are retried for every call;
//! `5xx` only for idempotent calls — a `create` that failed with 500 may
//! still have made a machine, and a second one would be a duplicate edge.
//! Timeouts are not retried: a slow API is likely slow again, and a ladder
//! step must stay bounded.

use super::super::{InfraError, MachineId};
use crate::secret::Secret;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// A machine as `GET /v1/apps/{app}/machines/{id}` describes it. `config` is
/// kept whole so that a copy (on replace) keeps what this type does not name.
#[derive(Clone, Debug, Deserialize)]
pub struct FlyMachine {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub state: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub private_ip: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub config: Value,
}

/// How the client retries and how long it waits.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// The first back-off after a 5xx or a refused connection; doubles each time.
    pub base: Duration,
    /// The longest wait for one retry, whatever `Retry-After` asks.
    pub max_wait: Duration,
}

pub struct Api {
    client: reqwest::Client,
    /// `{api_url}/v1/apps/{app}`.
    app_url: String,
    app: String,
    token: Secret<String>,
    timeout: Duration,
    retry: RetryPolicy,
}

/// One call: what it is for (errors and logs say so) and how it may be retried.
struct Call<'a> {
    method: Method,
    /// After `/v1/apps/{app}`.
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<&'a Value>,
    action: String,
    machine: Option<&'a MachineId>,
    idempotent: bool,
    /// Added to the timeout: `wait` holds the request open this long.
    hold: Duration,
}

impl Api {
    pub fn new(
        client: reqwest::Client,
        api_url: &str,
        app: &str,
        token: Secret<String>,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Api {
        Api {
            client,
            app_url: format!("{}/v1/apps/{app}", api_url.trim_end_matches('/')),
            app: app.to_string(),
            token,
            timeout,
            retry,
        }
    }

    /// `GET /v1/apps/{app}/machines`.
    pub async fn list(&self) -> Result<Vec<FlyMachine>, InfraError> {
        let call = self.call(Method::GET, "/machines", "listing machines", None);
        self.json(&call).await
    }

    /// `GET /v1/apps/{app}/machines/{id}`.
    pub async fn get(&self, id: &MachineId) -> Result<FlyMachine, InfraError> {
        let call = self.call(Method::GET, &format!("/machines/{id}"), "reading", Some(id));
        self.json(&call).await
    }

    /// `POST .../{id}/restart`, `.../stop` or `.../start`.
    pub async fn action(&self, id: &MachineId, action: Action) -> Result<(), InfraError> {
        let (verb, doing) = match action {
            Action::Restart => ("restart", "restarting"),
            Action::Stop => ("stop", "stopping"),
            Action::Start => ("start", "starting"),
        };
        let call = self.call(
            Method::POST,
            &format!("/machines/{id}/{verb}"),
            doing,
            Some(id),
        );
        self.send(&call).await.map(drop)
    }

    /// `DELETE .../{id}?force=true`: destroys it even while it runs.
    pub async fn destroy(&self, id: &MachineId) -> Result<(), InfraError> {
        let mut call = self.call(
            Method::DELETE,
            &format!("/machines/{id}"),
            "destroying",
            Some(id),
        );
        call.query.push(("force", "true".into()));
        self.send(&call).await.map(drop)
    }

    /// `POST /v1/apps/{app}/machines` with `{"name", "region", "config"}`.
    pub async fn create(
        &self,
        name: &str,
        region: &str,
        config: &Value,
    ) -> Result<FlyMachine, InfraError> {
        let body = serde_json::json!({ "name": name, "region": region, "config": config });
        let action = format!("creating machine {name:?} in region {region}");
        let mut call = self.call(Method::POST, "/machines", &action, None);
        call.action = format!("{action} (app {})", self.app);
        call.body = Some(&body);
        call.idempotent = false;
        self.json(&call).await
    }

    /// `GET .../{id}/wait?state=S&timeout=N` (N in seconds, 1 to 60, Fly's
    /// limits): `true` once the machine is in `state`, `false` when Fly's
    /// wait timed out (`408`).
    pub async fn wait(&self, id: &MachineId, state: &str, secs: u64) -> Result<bool, InfraError> {
        let secs = secs.clamp(1, 60);
        let doing = format!("waiting for `{state}` of");
        let mut call = self.call(
            Method::GET,
            &format!("/machines/{id}/wait"),
            &doing,
            Some(id),
        );
        call.query = vec![("state", state.to_string()), ("timeout", secs.to_string())];
        call.hold = Duration::from_secs(secs);
        match self.attempts(&call).await? {
            (StatusCode::REQUEST_TIMEOUT, _) => Ok(false),
            (status, body) => self.check(&call, status, &body).map(|()| true),
        }
    }

    fn call<'a>(
        &self,
        method: Method,
        path: &str,
        doing: &str,
        machine: Option<&'a MachineId>,
    ) -> Call<'a> {
        let action = match machine {
            Some(id) => format!("{doing} machine {id} (app {})", self.app),
            None => format!("{doing} (app {})", self.app),
        };
        Call {
            method,
            path: path.to_string(),
            query: Vec::new(),
            body: None,
            action,
            machine,
            idempotent: true,
            hold: Duration::ZERO,
        }
    }

    async fn json<T: for<'de> Deserialize<'de>>(&self, call: &Call<'_>) -> Result<T, InfraError> {
        let body = self.send(call).await?;
        serde_json::from_slice(&body).map_err(|e| InfraError::Fly {
            action: call.action.clone(),
            status: None,
            message: format!("unexpected answer: {e}"),
        })
    }

    /// The body of a 2xx answer, or the error the answer means.
    async fn send(&self, call: &Call<'_>) -> Result<bytes::Bytes, InfraError> {
        let (status, body) = self.attempts(call).await?;
        self.check(call, status, &body)?;
        Ok(body)
    }

    fn check(&self, call: &Call<'_>, status: StatusCode, body: &[u8]) -> Result<(), InfraError> {
        if status.is_success() {
            return Ok(());
        }
        if let (StatusCode::NOT_FOUND, Some(id)) = (status, call.machine) {
            return Err(InfraError::UnknownMachine(id.clone()));
        }
        let mut message = fly_message(body);
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            message.push_str(&format!(
                " (PORTICO_FLY_API_TOKEN must be a token allowed to manage the machines of app {})",
                self.app
            ));
        }
        Err(InfraError::Fly {
            action: call.action.clone(),
            status: Some(status.as_u16()),
            message,
        })
    }

    /// Sends `call` until it gets an answer that is not to be retried, or
    /// the retries run out (then the last answer); `Err` when no answer came.
    async fn attempts(&self, call: &Call<'_>) -> Result<(StatusCode, bytes::Bytes), InfraError> {
        let mut retry = 0;
        loop {
            let outcome = self.once(call).await;
            let delay = match &outcome {
                Ok((status, _, retry_after)) if *status == StatusCode::TOO_MANY_REQUESTS => {
                    Some(retry_after.unwrap_or_else(|| self.backoff(retry)))
                }
                Ok((status, ..)) if status.is_server_error() && call.idempotent => {
                    Some(self.backoff(retry))
                }
                Err(e) if e.is_connect() => Some(self.backoff(retry)),
                _ => None,
            };
            match (delay, outcome) {
                (Some(delay), _) if retry < self.retry.retries => {
                    let delay = delay.min(self.retry.max_wait);
                    tracing::warn!(action = %call.action, retry = retry + 1, ?delay, "Fly API call failed; retrying");
                    tokio::time::sleep(delay).await; // allow-sleep: back-off between retries
                    retry += 1;
                }
                (_, Ok((status, body, _))) => return Ok((status, body)),
                (_, Err(e)) => return Err(self.transport_error(call, &e)),
            }
        }
    }

    /// One HTTP exchange: status, body and `Retry-After` (seconds).
    async fn once(
        &self,
        call: &Call<'_>,
    ) -> Result<(StatusCode, bytes::Bytes, Option<Duration>), reqwest::Error> {
        // Query values are ours (state names, numbers): nothing to escape.
        let query: Vec<String> = call.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let url = match query.is_empty() {
            true => format!("{}{}", self.app_url, call.path),
            false => format!("{}{}?{}", self.app_url, call.path, query.join("&")),
        };
        let mut request = self
            .client
            .request(call.method.clone(), url)
            .header(reqwest::header::AUTHORIZATION, self.authorization())
            .timeout(self.timeout + call.hold);
        if let Some(body) = call.body {
            request = request.json(body);
        }
        tracing::debug!(method = %call.method, path = %call.path, "Fly API call");
        let response = request.send().await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await?;
        Ok((status, body, retry_after))
    }

    /// `Bearer TOKEN`; a macaroon token (`FlyV1 fm2_…`, from `fly tokens
    /// create`) already carries its scheme and is sent as it is.
    fn authorization(&self) -> reqwest::header::HeaderValue {
        let token = self.token.expose().trim();
        let value = if token.starts_with("FlyV1 ") {
            token.to_string()
        } else {
            format!("Bearer {token}")
        };
        // A token with bytes a header can't carry is sent empty: Fly answers 401.
        let mut value = reqwest::header::HeaderValue::from_str(&value)
            .unwrap_or(reqwest::header::HeaderValue::from_static(""));
        value.set_sensitive(true);
        value
    }

    fn backoff(&self, retry: u32) -> Duration {
        self.retry.base.saturating_mul(2u32.saturating_pow(retry))
    }

    fn transport_error(&self, call: &Call<'_>, e: &reqwest::Error) -> InfraError {
        let message = if e.is_timeout() {
            format!(
                "no answer within {} ms",
                (self.timeout + call.hold).as_millis()
            )
        } else {
            error_chain(e)
        };
        InfraError::Fly {
            action: call.action.clone(),
            status: None,
            message,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Action {
    Restart,
    Stop,
    Start,
}

/// Fly's `{"error": "..."}`, or the start of whatever else the body was.
fn fly_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct FlyError {
        error: String,
    }
    match serde_json::from_slice::<FlyError>(body) {
        Ok(e) => e.error,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            match text.char_indices().nth(200) {
                Some((at, _)) => format!("{}…", &text[..at]),
                None if text.is_empty() => "(empty body)".into(),
                None => text.to_string(),
            }
        }
    }
}

/// `e: cause: cause`, the way `anyhow` prints `{:#}`. reqwest's messages
/// name the URL, never the headers: the token does not appear.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fly_errors_are_read_or_cut_short() {
        assert_eq!(
            fly_message(br#"{"error":"machine not found"}"#),
            "machine not found"
        );
        assert_eq!(fly_message(b""), "(empty body)");
        let long = "x".repeat(500);
        assert_eq!(fly_message(long.as_bytes()).chars().count(), 201);
    }
}
