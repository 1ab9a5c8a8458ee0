//! The text of alert emails: a subject that says PAGE or RESOLVED and what,
//! and a plain body with what broke, when, and where to look.

use super::mailer::Email;
use crate::db::alerts::AlertRecord;
use chrono::{DateTime, Utc};

/// The email opening an alert.
pub fn page(a: &AlertRecord, public_url: &str) -> Email {
    Email {
        subject: format!("[Portico] PAGE: {}", one_line(&a.title)),
        body: format!(
            "{title}\n\n{body}\n\nSubject:  {subject}\nSeverity: {severity}\nOpened:   {opened}\nKey:      {key}\n\nDashboard: {links}\n\nYou get one more email when this alert is resolved.\n",
            title = a.title,
            body = a.body.trim_end(),
            subject = subject(a),
            severity = a.severity,
            opened = stamp(a.opened_at),
            key = a.dedup_key,
            links = links(a, public_url),
        ),
    }
}

/// The email closing an alert (also when its page never went out).
pub fn resolution(a: &AlertRecord, public_url: &str) -> Email {
    let resolved = a.resolved_at.unwrap_or(a.opened_at);
    let mut body = format!(
        "Resolved: {title}\n\n{note}\n\nSubject:  {subject}\nOpened:   {opened}\nResolved: {resolved} (after {took})\nKey:      {key}\n",
        title = a.title,
        note = a.resolution_note.as_deref().unwrap_or("").trim_end(),
        subject = subject(a),
        opened = stamp(a.opened_at),
        resolved = stamp(resolved),
        took = duration(resolved - a.opened_at),
        key = a.dedup_key,
    );
    if a.page_sent_at.is_none() {
        body.push_str(&format!(
            "\nThe page for this alert was never delivered. What broke:\n\n{}\n",
            a.body.trim_end()
        ));
    }
    body.push_str(&format!("\nDashboard: {}\n", links(a, public_url)));
    Email {
        subject: format!("[Portico] RESOLVED: {}", one_line(&a.title)),
        body,
    }
}

fn subject(a: &AlertRecord) -> String {
    match a.subject_id {
        Some(id) => format!("{} {id}", a.subject_kind),
        None => a.subject_kind.clone(),
    }
}

fn links(a: &AlertRecord, base: &str) -> String {
    let alert = format!("{base}/ops/alerts/{}", a.id);
    match a.subject_id {
        Some(id) => format!("{alert}\n           {base}/ops/{}s/{id}", a.subject_kind),
        None => alert,
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn duration(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// Header-safe: one line, at most 150 characters.
fn one_line(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    flat.trim().chars().take(150).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn alert() -> AlertRecord {
        let opened = "2026-12-03T09:00:00Z".parse().unwrap();
        AlertRecord {
            id: Uuid::nil(),
            subject_kind: "edge".into(),
            subject_id: Some(Uuid::max()),
            dedup_key: "run-1".into(),
            severity: "critical".into(),
            title: "edge fra-1 unreachable\r\nBcc: x@y".into(),
            body: "3 restarts failed".into(),
            status: "resolved".into(),
            opened_at: opened,
            resolved_at: Some(opened + chrono::Duration::seconds(125)),
            resolution_note: Some("replaced".into()),
            page_sent_at: Some(opened),
            page_attempts: 1,
            resolution_sent_at: None,
            resolution_attempts: 0,
            next_email_at: None,
            last_email_error: None,
            last_email_error_at: None,
            email_gave_up_at: None,
            leased_until: None,
            lease_token: None,
        }
    }

    #[test]
    fn emails_say_what_when_and_where() {
        let a = alert();
        let page = page(&a, "https://cp.example.test");
        assert_eq!(
            page.subject,
            "[Portico] PAGE: edge fra-1 unreachable  Bcc: x@y"
        );
        assert!(page.body.contains("3 restarts failed"));
        assert!(page.body.contains("2026-12-03 09:00:00 UTC"));
        assert!(
            page.body
                .contains(&format!("https://cp.example.test/ops/alerts/{}", a.id))
        );
        assert!(page.body.contains(&format!(
            "https://cp.example.test/ops/edges/{}",
            Uuid::max()
        )));
        let done = resolution(&a, "https://cp.example.test");
        assert!(done.subject.starts_with("[Portico] RESOLVED: edge fra-1"));
        assert!(done.body.contains("replaced") && done.body.contains("after 2m 5s"));
        assert!(!done.body.contains("never delivered"));
    }
}
