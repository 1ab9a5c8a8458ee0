//! What can go wrong while obtaining a certificate, sorted by what the caller
//! should do about it. The control plane's policy reads [`Error::is_retryable`]
//! and [`Error::retry_delay`]; it never parses messages.

use std::time::Duration;

use crate::issuer::ChallengeKind;

/// Suggested wait after a [`Error::Transient`] fault.
pub const TRANSIENT_DELAY: Duration = Duration::from_secs(10);
/// Suggested wait when the CA is unreachable and sent no hint.
pub const UNAVAILABLE_DELAY: Duration = Duration::from_secs(5 * 60);
/// Suggested wait when rate-limited and the CA sent no hint.
pub const RATE_LIMITED_DELAY: Duration = Duration::from_secs(60 * 60);
/// Suggested wait after a failed validation. Let's Encrypt counts failed
/// validations per hostname and hour, so retrying at once only burns that budget.
pub const VALIDATION_DELAY: Duration = Duration::from_secs(15 * 60);
/// Suggested wait after our own publisher failed.
pub const PUBLISH_DELAY: Duration = Duration::from_secs(30);

/// Why an issuance failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The CA refused because a rate limit was hit. `retry_after` is the CA's
    /// own hint (the `Retry-After` header, or the time in the problem detail).
    #[error("rate limited by the CA: {detail}")]
    RateLimited {
        retry_after: Option<Duration>,
        detail: String,
    },
    /// A fault that usually clears by itself: a bad nonce that outlived the
    /// client's own retries, a reset connection, a retryable server error.
    #[error("transient CA error: {detail}")]
    Transient { detail: String },
    /// The CA could not be reached, or did not answer (or finish) in time.
    #[error("CA unavailable: {detail}")]
    Unavailable {
        retry_after: Option<Duration>,
        detail: String,
    },
    /// The CA tried to validate a challenge and failed; `detail` is what it saw.
    #[error("{challenge} validation failed{}: {detail}", for_name(.name))]
    ValidationFailed {
        challenge: ChallengeKind,
        name: Option<String>,
        problem_type: Option<String>,
        detail: String,
    },
    /// The name's CAA records do not allow this CA to issue.
    #[error("CAA records forbid issuance{}: {detail}", for_name(.name))]
    CaaForbids {
        name: Option<String>,
        detail: String,
    },
    /// The CA refuses this account (unauthorized, unknown or deactivated
    /// account, external account binding required, terms to accept, bad contact).
    #[error("the CA refuses the account: {detail}")]
    Account {
        problem_type: Option<String>,
        detail: String,
    },
    /// Any other problem document: the CA will not do this (e.g. rejectedIdentifier).
    #[error("the CA rejected the request: {detail}")]
    Rejected {
        problem_type: Option<String>,
        detail: String,
    },
    /// The CA offered no challenge of the requested kind (e.g. HTTP-01 for a wildcard).
    #[error("the CA offered no {challenge} challenge for {name}")]
    ChallengeNotOffered {
        challenge: ChallengeKind,
        name: String,
    },
    /// Our [`ChallengePublisher`](crate::ChallengePublisher) failed.
    #[error("publishing the challenge answer failed: {0}")]
    Publish(#[from] PublishError),
    /// The configuration cannot work (bad directory URL, root PEM, EAB key,
    /// an unsupported CA feature, an untrusted CA certificate).
    #[error("invalid ACME configuration: {0}")]
    Config(String),
    /// The caller asked for something malformed (no names, a bad certificate id).
    #[error("invalid issue request: {0}")]
    InvalidRequest(String),
    /// A bug, a crypto failure, or a CA answer that breaks the protocol.
    #[error("internal ACME error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether sending the same request again later, with nothing else
    /// changed, may succeed. `false` means a person (operator or customer)
    /// must change something first.
    pub fn is_retryable(&self) -> bool {
        self.retry_delay().is_some()
    }

    /// How long to wait before retrying; `None` when a retry is pointless.
    pub fn retry_delay(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => {
                Some(retry_after.unwrap_or(RATE_LIMITED_DELAY))
            }
            Self::Transient { .. } => Some(TRANSIENT_DELAY),
            Self::Unavailable { retry_after, .. } => Some(retry_after.unwrap_or(UNAVAILABLE_DELAY)),
            Self::ValidationFailed { .. } => Some(VALIDATION_DELAY),
            Self::Publish(_) => Some(PUBLISH_DELAY),
            Self::CaaForbids { .. }
            | Self::Account { .. }
            | Self::Rejected { .. }
            | Self::ChallengeNotOffered { .. }
            | Self::Config(_)
            | Self::InvalidRequest(_)
            | Self::Internal(_) => None,
        }
    }
}

fn for_name(name: &Option<String>) -> String {
    name.as_ref()
        .map(|n| format!(" for {n}"))
        .unwrap_or_default()
}

/// A [`ChallengePublisher`](crate::ChallengePublisher) could not make an
/// answer reachable (edges did not acknowledge, storage failed, ...).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PublishError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl PublishError {
    /// A failure described by `message` alone.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// A failure with the error that caused it.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_reads_retry_advice_from_the_variant() {
        let rate = Error::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            detail: "slow down".into(),
        };
        assert_eq!(rate.retry_delay(), Some(Duration::from_secs(7)));
        let rate = Error::RateLimited {
            retry_after: None,
            detail: "slow down".into(),
        };
        assert_eq!(rate.retry_delay(), Some(RATE_LIMITED_DELAY));
        assert!(Error::Transient { detail: "x".into() }.is_retryable());
        assert!(Error::Publish(PublishError::new("edge down")).is_retryable());
        assert!(!Error::Config("bad url".into()).is_retryable());
        assert!(
            !Error::CaaForbids {
                name: None,
                detail: "x".into()
            }
            .is_retryable()
        );
    }

    #[test]
    fn messages_name_the_host() {
        let err = Error::ValidationFailed {
            challenge: ChallengeKind::Http01,
            name: Some("a.example".into()),
            problem_type: None,
            detail: "404".into(),
        };
        assert_eq!(
            err.to_string(),
            "http-01 validation failed for a.example: 404"
        );
    }
}
