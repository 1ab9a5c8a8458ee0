//! Turns what instant-acme and the CA report (errors, RFC 8555 problem
//! documents, HTTP status and `Retry-After`) into [`Error`] variants that
//! policy can act on. Pure: the clock and the last response are passed in.

use std::error::Error as StdError;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use instant_acme::Problem;

use crate::error::Error;
use crate::http::{RequestTimedOut, ResponseMeta};
use crate::issuer::ChallengeKind;

const PREFIX: &str = "urn:ietf:params:acme:error:";

/// What the classifier knows besides the error itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Context {
    /// The challenge type in use, for validation problems.
    pub(crate) challenge: ChallengeKind,
    /// The last response's status and `Retry-After`, if any.
    pub(crate) last: Option<ResponseMeta>,
    pub(crate) now: DateTime<Utc>,
}

impl Context {
    /// A context for the current task (last response from [`crate::http`]).
    pub(crate) fn current(challenge: ChallengeKind) -> Self {
        Self {
            challenge,
            last: crate::http::last_response(),
            now: Utc::now(),
        }
    }
}

/// Classify an error returned by instant-acme.
pub(crate) fn classify(err: instant_acme::Error, ctx: &Context) -> Error {
    use instant_acme::Error as E;
    match err {
        E::Api(problem) => classify_problem(&problem, ctx),
        E::Timeout(_) => Error::Unavailable {
            retry_after: None,
            detail: "the CA did not finish the order in time".into(),
        },
        E::Hyper(e) => Error::Transient {
            detail: e.to_string(),
        },
        E::Other(e) => classify_other(e.as_ref()),
        E::Json(e) => match ctx.last.map(|last| last.status) {
            Some(429) => Error::RateLimited {
                retry_after: ctx.last.and_then(|last| last.retry_after),
                detail: format!("HTTP 429 with no problem document ({e})"),
            },
            Some(status) if status >= 500 => Error::Unavailable {
                retry_after: ctx.last.and_then(|last| last.retry_after),
                detail: format!("HTTP {status} with no problem document ({e})"),
            },
            _ => Error::Transient {
                detail: format!("unreadable CA response: {e}"),
            },
        },
        E::Unsupported(what) => Error::Config(format!("the CA does not support {what}")),
        E::Http(e) => Error::Config(format!("request to the CA: {e}")),
        E::InvalidUri(e) => Error::Config(format!("CA URL: {e}")),
        other => Error::Internal(other.to_string()),
    }
}

/// Transport failures: our deadline, refused connections, TLS trust.
fn classify_other(err: &(dyn StdError + 'static)) -> Error {
    let detail = chain_text(err);
    if err.downcast_ref::<RequestTimedOut>().is_some() {
        return Error::Unavailable {
            retry_after: None,
            detail,
        };
    }
    if let Some(rustls::Error::InvalidCertificate(_)) = find_source::<rustls::Error>(err) {
        return Error::Config(format!("the CA's TLS certificate is not trusted: {detail}"));
    }
    match err.downcast_ref::<hyper_util::client::legacy::Error>() {
        Some(e) if e.is_connect() => Error::Unavailable {
            retry_after: None,
            detail,
        },
        Some(_) => Error::Transient { detail },
        None => Error::Internal(detail),
    }
}

/// Classify a problem document returned for a request.
pub(crate) fn classify_problem(problem: &Problem, ctx: &Context) -> Error {
    let kind = short_type(problem.r#type.as_deref());
    let status = problem.status.or(ctx.last.map(|last| last.status));
    let problem_type = problem.r#type.clone();
    let detail = describe(problem);
    match kind {
        "compound" => classify_compound(problem, ctx),
        "rateLimited" => Error::RateLimited {
            retry_after: ctx
                .last
                .and_then(|last| last.retry_after)
                .or_else(|| retry_after_in_detail(&detail, ctx.now)),
            detail,
        },
        _ if status == Some(503) => Error::Unavailable {
            retry_after: ctx.last.and_then(|last| last.retry_after),
            detail,
        },
        "badNonce" | "serverInternal" | "orderNotReady" => Error::Transient { detail },
        "caa" => Error::CaaForbids {
            name: first_name(problem),
            detail,
        },
        "connection" | "dns" | "incorrectResponse" | "tls" => Error::ValidationFailed {
            challenge: ctx.challenge,
            name: first_name(problem),
            problem_type,
            detail,
        },
        "unauthorized"
        | "accountDoesNotExist"
        | "externalAccountRequired"
        | "userActionRequired"
        | "invalidContact"
        | "unsupportedContact"
        | "badPublicKey" => Error::Account {
            problem_type,
            detail,
        },
        _ if status.is_some_and(|s| s >= 500) => Error::Transient { detail },
        _ => Error::Rejected {
            problem_type,
            detail,
        },
    }
}

/// A problem found on a challenge the CA tried to validate for `name`.
/// Everything there is a validation failure, except CAA.
pub(crate) fn classify_validation(
    problem: &Problem,
    challenge: ChallengeKind,
    name: &str,
) -> Error {
    let detail = describe(problem);
    match short_type(problem.r#type.as_deref()) {
        "caa" => Error::CaaForbids {
            name: Some(name.to_owned()),
            detail,
        },
        _ => Error::ValidationFailed {
            challenge,
            name: Some(name.to_owned()),
            problem_type: problem.r#type.clone(),
            detail,
        },
    }
}

/// Several problems at once: report the first one a retry will not cure,
/// else the first one.
fn classify_compound(problem: &Problem, ctx: &Context) -> Error {
    let mut errors = problem.subproblems.iter().map(|sub| {
        let single = Problem {
            r#type: sub.r#type.clone(),
            detail: sub.detail.clone(),
            status: problem.status,
            subproblems: vec![sub.clone()],
        };
        classify_problem(&single, ctx)
    });
    let Some(first) = errors.next() else {
        return Error::Rejected {
            problem_type: problem.r#type.clone(),
            detail: describe(problem),
        };
    };
    if !first.is_retryable() {
        return first;
    }
    errors.find(|e| !e.is_retryable()).unwrap_or(first)
}

fn short_type(problem_type: Option<&str>) -> &str {
    let full = problem_type.unwrap_or_default();
    full.strip_prefix(PREFIX).unwrap_or(full)
}

fn first_name(problem: &Problem) -> Option<String> {
    problem
        .subproblems
        .iter()
        .find_map(|sub| match &sub.identifier {
            Some(instant_acme::Identifier::Dns(name)) => Some(name.clone()),
            _ => None,
        })
}

/// The CA's own words: detail, then each subproblem's.
fn describe(problem: &Problem) -> String {
    let mut text = problem
        .detail
        .clone()
        .or_else(|| problem.r#type.clone())
        .unwrap_or_else(|| "no detail".into());
    for sub in &problem.subproblems {
        let name = match &sub.identifier {
            Some(instant_acme::Identifier::Dns(name)) => name.as_str(),
            _ => "?",
        };
        text.push_str(&format!(
            "; {name}: {}",
            sub.detail.as_deref().unwrap_or("?")
        ));
    }
    text
}

/// Let's Encrypt writes "... retry after 2025-01-01 19:00:00 UTC: see ...".
fn retry_after_in_detail(detail: &str, now: DateTime<Utc>) -> Option<Duration> {
    let (_, rest) = detail.split_once("retry after ")?;
    let stamp = rest.get(..19)?;
    let at = NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S")
        .ok()?
        .and_utc();
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Walk the source chain for a `T`, looking inside `io::Error`s too (their
/// `source()` skips the error they wrap, which is where rustls's sits,
/// often two `io::Error`s deep).
fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        let wrapped = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn StdError + 'static));
        current = wrapped.or_else(|| e.source());
    }
    None
}

fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
