//! Ops alerts: paging operators by email, and the alert rows the dashboard
//! shows. The escalation ladders call [`Alerts::page`] when a repair run
//! gives up and [`Alerts::resolve`] when it closes.
//!
//! Data flows like this: `page` opens an alert row (one open row per dedup
//! key, so paging twice sends nothing more) with its page email due, then
//! tries to send it at once; `resolve` closes the row with its resolution
//! email due and does the same. The row is the source of truth: a sender
//! leases it, sends through the [`Mailer`] and records the outcome; a failed
//! send keeps its error on the row and is retried by [`Alerts::run`] on the
//! configured schedule until it goes out or the schedule runs out. Without
//! email settings alerts are stored only, which is logged once.

pub mod email;
pub mod mailer;

use crate::db;
use crate::db::alerts::{AlertRecord, Lease, NewAlert};
use crate::ids::{DomainId, EdgeId};
use crate::settings::AlertSettings;
pub use mailer::{Email, MailError, Mailer, SmtpMailer};
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Due emails one pass of the sender leases at most.
const BATCH: i64 = 20;

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    Edge(EdgeId),
    Domain(DomainId),
    Platform,
}

impl Subject {
    fn parts(self) -> (&'static str, Option<Uuid>) {
        match self {
            Subject::Edge(id) => ("edge", Some(id.as_uuid())),
            Subject::Domain(id) => ("domain", Some(id.as_uuid())),
            Subject::Platform => ("platform", None),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("invalid alert: {0}")]
    Invalid(&'static str),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// What became of an email when `page` or `resolve` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// The send failed; the error is on the row and a retry is scheduled.
    Failed(String),
    /// Email alerting is not configured: the alert is stored only.
    NotConfigured,
    /// Nothing to send: the alert was already open (or already resolved).
    Nothing,
    /// Another sender holds the alert right now; it will send.
    Elsewhere,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub alert: AlertRecord,
    /// `false` when `page` found the alert already open.
    pub changed: bool,
    pub email: Delivery,
}

/// Cheap to clone; shared by the API, jobs and the sender loop.
#[derive(Clone, Debug)]
pub struct Alerts {
    pool: PgPool,
    mailer: Option<Arc<dyn Mailer>>,
    settings: Arc<AlertSettings>,
    told_not_configured: Arc<AtomicBool>,
}

impl Alerts {
    /// With the SMTP mailer when email is configured.
    pub fn new(pool: PgPool, settings: &AlertSettings) -> Result<Alerts, MailError> {
        let mailer = match &settings.email {
            Some(email) => Some(Arc::new(SmtpMailer::new(email)?) as Arc<dyn Mailer>),
            None => None,
        };
        Ok(Self::with_mailer(pool, settings, mailer))
    }

    /// With a given mailer, or none (tests inject one).
    pub fn with_mailer(
        pool: PgPool,
        settings: &AlertSettings,
        mailer: Option<Arc<dyn Mailer>>,
    ) -> Alerts {
        Alerts {
            pool,
            mailer,
            settings: Arc::new(settings.clone()),
            told_not_configured: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Opens an alert and pages ops, once per open dedup key (e.g. the
    /// repair run id): paging again while it is open changes nothing.
    pub async fn page(
        &self,
        dedup_key: &str,
        subject: Subject,
        title: &str,
        body: &str,
    ) -> Result<Outcome, AlertError> {
        check(dedup_key, title, body)?;
        let (subject_kind, subject_id) = subject.parts();
        let new = NewAlert {
            subject_kind,
            subject_id,
            dedup_key,
            severity: "critical",
            title,
            body,
            email: self.mailer.is_some(),
        };
        // Open, or find the open one; if that was resolved in between, open again.
        for _ in 0..3 {
            let lease = self.lease();
            if let Some(alert) = db::alerts::open(&self.pool, &new, lease).await? {
                tracing::warn!(alert = %alert.id, key = dedup_key, subject = subject_kind, title, "alert opened");
                return self.send_now(alert, lease).await;
            }
            if let Some(alert) = db::alerts::find_open(&self.pool, dedup_key).await? {
                return Ok(Outcome {
                    alert,
                    changed: false,
                    email: Delivery::Nothing,
                });
            }
        }
        Err(AlertError::Invalid(
            "the alert keeps being resolved while it is paged",
        ))
    }

    /// Resolves the open alert of `dedup_key` and sends one resolution
    /// email; `None` when no alert is open for it (resolving twice is fine).
    pub async fn resolve(
        &self,
        dedup_key: &str,
        note: &str,
    ) -> Result<Option<Outcome>, AlertError> {
        if note.len() > 10_000 {
            return Err(AlertError::Invalid("the note is longer than 10,000 bytes"));
        }
        let email = self.mailer.is_some();
        let lease = self.lease();
        let Some(alert) = db::alerts::resolve(&self.pool, dedup_key, note, email, lease).await?
        else {
            return Ok(None);
        };
        tracing::info!(alert = %alert.id, key = dedup_key, "alert resolved");
        self.send_now(alert, lease).await.map(Some)
    }

    /// One pass of the sender: every due email (up to a batch) is sent or
    /// rescheduled. Returns how many alerts were handled.
    pub async fn deliver_due(&self) -> Result<usize, AlertError> {
        let Some(mailer) = &self.mailer else {
            return Ok(0);
        };
        let lease = self.lease();
        let due = db::alerts::claim_due(&self.pool, BATCH, lease).await?;
        for alert in &due {
            self.deliver(mailer.as_ref(), alert, lease.token).await?;
        }
        Ok(due.len())
    }

    /// Retries due emails every tick until `stop`. Any number of processes
    /// may run this: leases keep them from sending one email twice.
    pub async fn run(self, stop: CancellationToken) {
        if self.mailer.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.deliver_due().await {
                tracing::warn!(error = %e, "alert email pass failed; retrying next tick");
            }
        }
    }

    /// Sends the email `page`/`resolve` just made due, if their write
    /// leased the row to us (otherwise another sender holds it and will).
    async fn send_now(&self, alert: AlertRecord, lease: Lease) -> Result<Outcome, AlertError> {
        let Some(mailer) = &self.mailer else {
            if !self.told_not_configured.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "alert emails are off (PORTICO_ALERT_EMAILS is not set): alerts are stored and listed at /v1/ops/alerts, not emailed"
                );
            }
            return Ok(done(alert, Delivery::NotConfigured));
        };
        if alert.lease_token != Some(lease.token) {
            return Ok(done(alert, Delivery::Elsewhere));
        }
        let email = self.deliver(mailer.as_ref(), &alert, lease.token).await?;
        let alert = db::alerts::get(&self.pool, alert.id)
            .await?
            .unwrap_or(alert);
        Ok(done(alert, email))
    }

    /// Sends the email a leased alert is due and records the outcome.
    async fn deliver(
        &self,
        mailer: &dyn Mailer,
        a: &AlertRecord,
        token: Uuid,
    ) -> Result<Delivery, AlertError> {
        let resolution = a.status == "resolved";
        let base = &self.settings.public_url;
        let message = if resolution {
            email::resolution(a, base)
        } else {
            email::page(a, base)
        };
        match mailer.send(&message).await {
            Ok(()) if resolution => db::alerts::resolution_sent(&self.pool, a.id, token).await?,
            Ok(()) => db::alerts::page_sent(&self.pool, a.id, token).await?,
            Err(e) => {
                let done = if resolution {
                    a.resolution_attempts
                } else {
                    a.page_attempts
                };
                let retry_in = usize::try_from(done)
                    .ok()
                    .and_then(|n| self.settings.retry_schedule.get(n).copied());
                tracing::warn!(alert = %a.id, key = %a.dedup_key, error = %e, retry_in = ?retry_in, "alert email failed");
                db::alerts::send_failed(&self.pool, a.id, token, resolution, &e.0, retry_in)
                    .await?;
                return Ok(Delivery::Failed(e.0));
            }
        }
        tracing::info!(alert = %a.id, key = %a.dedup_key, resolution, "alert email sent");
        Ok(Delivery::Sent)
    }

    /// A fresh lease, longer than any one send can take, so a live sender
    /// keeps it.
    fn lease(&self) -> Lease {
        let timeout = self
            .settings
            .email
            .as_ref()
            .map_or(Duration::from_secs(10), |e| e.smtp.timeout);
        Lease {
            token: Uuid::now_v7(),
            length: timeout * 6 + Duration::from_secs(30),
        }
    }
}

fn done(alert: AlertRecord, email: Delivery) -> Outcome {
    Outcome {
        alert,
        changed: true,
        email,
    }
}

fn check(dedup_key: &str, title: &str, body: &str) -> Result<(), AlertError> {
    if dedup_key.is_empty() || dedup_key.len() > 200 {
        return Err(AlertError::Invalid("the dedup key must be 1 to 200 bytes"));
    }
    if title.trim().is_empty() || title.chars().count() > 200 {
        return Err(AlertError::Invalid("the title must be 1 to 200 characters"));
    }
    if body.len() > 10_000 {
        return Err(AlertError::Invalid("the body is longer than 10,000 bytes"));
    }
    Ok(())
}
