//! Ops alert settings (`PORTICO_ALERT_*`, `PORTICO_SMTP_*`, `PORTICO_PUBLIC_URL`),
//! documented in `docs/configuration.md` and `docs/alerts.md`. Email is on
//! when `PORTICO_ALERT_EMAILS` is set; it then needs an SMTP host and a
//! From address. Without it alerts are stored and shown, not emailed.

use super::{Raw, SettingsError, err, positive};
use crate::secret::Secret;
use lettre::Address;
use lettre::message::Mailbox;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct AlertSettings {
    /// `None`: alerts are stored, not emailed.
    pub email: Option<AlertEmail>,
    /// Base of the links in emails (`{public_url}/ops/alerts/{id}`), no trailing `/`.
    pub public_url: String,
    /// Delay before each retry of a failed email; after the last, it is given up.
    pub retry_schedule: Vec<Duration>,
    /// How often the sender looks for due emails.
    pub tick: Duration,
}

#[derive(Clone, Debug)]
pub struct AlertEmail {
    pub to: Vec<Address>,
    pub from: Mailbox,
    pub smtp: SmtpSettings,
}

#[derive(Clone, Debug)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub mode: SmtpMode,
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
    /// Connect and per-command timeout.
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpMode {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS at all: a relay on loopback or a private network only.
    Plain,
}

impl SmtpMode {
    pub fn default_port(self) -> u16 {
        match self {
            SmtpMode::StartTls => 587,
            SmtpMode::Tls => 465,
            SmtpMode::Plain => 25,
        }
    }
}

pub const DEFAULT_RETRY_SCHEDULE: &str = "10s,1m,5m,15m,30m,1h,2h,4h";

pub(super) fn alert_settings(
    raw: &Raw,
    listen: SocketAddr,
) -> Result<AlertSettings, SettingsError> {
    let public_url = match raw.get("PORTICO_PUBLIC_URL") {
        None => format!("http://{listen}"),
        Some(u) => {
            let parsed =
                url::Url::parse(u).map_err(|e| err("PORTICO_PUBLIC_URL", &e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(err(
                    "PORTICO_PUBLIC_URL",
                    "must be an http:// or https:// URL",
                ));
            }
            u.trim_end_matches('/').to_string()
        }
    };
    let schedule = raw
        .get("PORTICO_ALERT_RETRY_SCHEDULE")
        .unwrap_or(DEFAULT_RETRY_SCHEDULE);
    Ok(AlertSettings {
        email: alert_email(raw)?,
        public_url,
        retry_schedule: super::parse_schedule(schedule)
            .map_err(|e| err("PORTICO_ALERT_RETRY_SCHEDULE", &e))?,
        tick: Duration::from_millis(u64::from(positive(raw, "PORTICO_ALERT_TICK_MS", 1_000)?)),
    })
}

fn alert_email(raw: &Raw) -> Result<Option<AlertEmail>, SettingsError> {
    let to = raw.list("PORTICO_ALERT_EMAILS", |s| {
        s.parse::<Address>()
            .map_err(|e| format!("{s:?} is not an email address: {e}"))
    })?;
    if to.is_empty() {
        if let Some(v) = ["PORTICO_SMTP_HOST", "PORTICO_ALERT_FROM"]
            .into_iter()
            .find(|v| raw.get(v).is_some())
        {
            return Err(err(
                "PORTICO_ALERT_EMAILS",
                &format!("required with {v}: the addresses alerts are sent to"),
            ));
        }
        return Ok(None);
    }
    let host = raw
        .get("PORTICO_SMTP_HOST")
        .ok_or_else(|| err("PORTICO_SMTP_HOST", "required with PORTICO_ALERT_EMAILS"))?;
    let from = raw
        .get("PORTICO_ALERT_FROM")
        .ok_or_else(|| err("PORTICO_ALERT_FROM", "required with PORTICO_ALERT_EMAILS"))?
        .parse::<Mailbox>()
        .map_err(|e| err("PORTICO_ALERT_FROM", &format!("not an email address: {e}")))?;
    let mode = match raw.get("PORTICO_SMTP_MODE").unwrap_or("starttls") {
        "starttls" => SmtpMode::StartTls,
        "tls" => SmtpMode::Tls,
        "plain" => SmtpMode::Plain,
        _ => {
            return Err(err(
                "PORTICO_SMTP_MODE",
                "must be `starttls`, `tls` or `plain`",
            ));
        }
    };
    let port = raw.parse_or("PORTICO_SMTP_PORT", Some(mode.default_port()))?;
    if port == 0 {
        return Err(err("PORTICO_SMTP_PORT", "must be greater than zero"));
    }
    let username = raw.get("PORTICO_SMTP_USERNAME").map(str::to_string);
    // Read without trimming: a password may end in a space.
    let password = raw
        .0
        .get("PORTICO_SMTP_PASSWORD")
        .filter(|p| !p.is_empty())
        .map(|p| Secret::new(p.clone()));
    match (&username, &password) {
        (Some(_), None) => {
            return Err(err(
                "PORTICO_SMTP_PASSWORD",
                "required with PORTICO_SMTP_USERNAME",
            ));
        }
        (None, Some(_)) => {
            return Err(err(
                "PORTICO_SMTP_USERNAME",
                "required with PORTICO_SMTP_PASSWORD",
            ));
        }
        _ => {}
    }
    Ok(Some(AlertEmail {
        to,
        from,
        smtp: SmtpSettings {
            host: host.to_string(),
            port,
            mode,
            username,
            password,
            timeout: Duration::from_millis(u64::from(positive(
                raw,
                "PORTICO_SMTP_TIMEOUT_MS",
                10_000,
            )?)),
        },
    }))
}

#[cfg(test)]
mod tests {
    use crate::settings::Settings;
    use std::collections::HashMap;

    const PASSWORD: &str = "smtp-hunter2-password";

    fn settings(extra: &[(&str, &str)]) -> Result<Settings, crate::settings::SettingsError> {
        let mut env: HashMap<String, String> = HashMap::from([("DATABASE_URL".into(), "x".into())]);
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        Settings::from_sources(env)
    }

    fn full() -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "PORTICO_ALERT_EMAILS",
                "ops@example.test, oncall@example.test",
            ),
            ("PORTICO_ALERT_FROM", "Portico <portico@example.test>"),
            ("PORTICO_SMTP_HOST", "smtp.example.test"),
            ("PORTICO_SMTP_USERNAME", "portico"),
            ("PORTICO_SMTP_PASSWORD", PASSWORD),
        ]
    }

    #[test]
    fn email_is_off_by_default_and_on_with_addresses() {
        let s = settings(&[]).unwrap();
        assert!(s.alerts.email.is_none());
        assert_eq!(s.alerts.public_url, "http://127.0.0.1:8080");
        let s = settings(&full()).unwrap();
        let email = s.alerts.email.as_ref().unwrap();
        assert_eq!(email.to.len(), 2);
        assert_eq!(email.smtp.port, 587);
        assert_eq!(email.smtp.mode, super::SmtpMode::StartTls);
        assert_eq!(email.smtp.password.as_ref().unwrap().expose(), PASSWORD);
        assert!(
            !format!("{s:?}").contains(PASSWORD),
            "the SMTP password is not printed"
        );
    }

    #[test]
    fn bad_alert_settings_name_the_variable() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut all = full();
            for (k, v) in pairs {
                all.retain(|(key, _)| key != k);
                if !v.is_empty() {
                    all.push((k, v));
                }
            }
            settings(&all).unwrap_err()
        };
        for (pairs, variable) in [
            (
                &[("PORTICO_ALERT_EMAILS", "not an address")][..],
                "PORTICO_ALERT_EMAILS",
            ),
            (&[("PORTICO_SMTP_HOST", "")][..], "PORTICO_SMTP_HOST"),
            (&[("PORTICO_ALERT_FROM", "")][..], "PORTICO_ALERT_FROM"),
            (&[("PORTICO_ALERT_FROM", "nope@")][..], "PORTICO_ALERT_FROM"),
            (&[("PORTICO_SMTP_MODE", "ssl")][..], "PORTICO_SMTP_MODE"),
            (&[("PORTICO_SMTP_PORT", "0")][..], "PORTICO_SMTP_PORT"),
            (&[("PORTICO_SMTP_PORT", "70000")][..], "PORTICO_SMTP_PORT"),
            (
                &[("PORTICO_SMTP_PASSWORD", "")][..],
                "PORTICO_SMTP_PASSWORD",
            ),
            (
                &[("PORTICO_SMTP_USERNAME", "")][..],
                "PORTICO_SMTP_USERNAME",
            ),
            (
                &[("PORTICO_SMTP_TIMEOUT_MS", "0")][..],
                "PORTICO_SMTP_TIMEOUT_MS",
            ),
            (
                &[("PORTICO_PUBLIC_URL", "ftp://x")][..],
                "PORTICO_PUBLIC_URL",
            ),
            (
                &[("PORTICO_ALERT_RETRY_SCHEDULE", "5x")][..],
                "PORTICO_ALERT_RETRY_SCHEDULE",
            ),
            (&[("PORTICO_ALERT_EMAILS", "")][..], "PORTICO_ALERT_EMAILS"),
        ] {
            let e = with(pairs);
            assert_eq!(e.variable, variable, "{pairs:?}");
            assert!(!e.to_string().contains(PASSWORD));
        }
    }
}
