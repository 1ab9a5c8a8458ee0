//! How an email leaves: the [`Mailer`] trait (tests may inject their own)
//! and [`SmtpMailer`], lettre's async SMTP transport with rustls.

use crate::settings::{AlertEmail, SmtpMode};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::fmt;

/// One plain-text email to the ops addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    pub subject: String,
    pub body: String,
}

/// Why a send failed, in words safe to store and log (no credentials).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MailError(pub String);

#[async_trait::async_trait]
pub trait Mailer: Send + Sync + fmt::Debug {
    async fn send(&self, email: &Email) -> Result<(), MailError>;
}

/// Sends through one SMTP relay. `Debug` shows the relay, never the password.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    relay: String,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("relay", &self.relay)
            .field("from", &self.from.to_string())
            .field("to", &self.to.len())
            .finish()
    }
}

impl SmtpMailer {
    /// Call inside a Tokio runtime: the connection pool runs a task there
    /// (and dropping the mailer spawns one to close its connections).
    pub fn new(settings: &AlertEmail) -> Result<SmtpMailer, MailError> {
        let smtp = &settings.smtp;
        let builder = match smtp.mode {
            SmtpMode::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host),
            SmtpMode::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host),
            SmtpMode::Plain => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                smtp.host.as_str(),
            )),
        }
        .map_err(|e| MailError(format!("SMTP relay {}: {e}", smtp.host)))?;
        let mut builder = builder.port(smtp.port).timeout(Some(smtp.timeout));
        if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().clone()));
        }
        Ok(SmtpMailer {
            transport: builder.build(),
            from: settings.from.clone(),
            to: settings
                .to
                .iter()
                .map(|a| Mailbox::new(None, a.clone()))
                .collect(),
            relay: format!("{:?} {}:{}", smtp.mode, smtp.host, smtp.port),
        })
    }
}

#[async_trait::async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(email.subject.clone())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .body(email.body.clone())
            .map_err(|e| MailError(format!("cannot build the email: {e}")))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| MailError(format!("SMTP {}: {e}", self.relay)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use std::collections::HashMap;

    // The connection pool runs a task: build and drop it inside a runtime.
    #[tokio::test]
    async fn every_mode_builds_a_transport_and_debug_hides_the_password() {
        for mode in ["starttls", "tls", "plain"] {
            let env: HashMap<String, String> = [
                ("DATABASE_URL", "x"),
                ("PORTICO_ALERT_EMAILS", "ops@example.test"),
                ("PORTICO_ALERT_FROM", "portico@example.test"),
                ("PORTICO_SMTP_HOST", "smtp.example.test"),
                ("PORTICO_SMTP_MODE", mode),
                ("PORTICO_SMTP_USERNAME", "portico"),
                ("PORTICO_SMTP_PASSWORD", "mailer-secret-42"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let settings = Settings::from_sources(env).unwrap();
            let mailer = SmtpMailer::new(settings.alerts.email.as_ref().unwrap()).unwrap();
            let shown = format!("{mailer:?}");
            assert!(shown.contains("smtp.example.test"), "{shown}");
            assert!(!shown.contains("mailer-secret-42"), "{shown}");
        }
    }
}
