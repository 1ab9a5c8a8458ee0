//! The page frame and the pieces every page uses: layout (skip link, nav,
//! live-status line), login and error pages, times, and a repair run with
//! its step timeline. maud escapes every interpolated value.
//!
//! A section that updates live carries `id`, `data-src` (the URL that
//! renders it again) and `data-topics` (the [`super::live::Topics`] names
//! it shows); `live.js` swaps it when a `changed` event names one of them.

use crate::db::repairs::{RunRecord, StepRecord};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use uuid::Uuid;

const CSS: &str = include_str!("dashboard.css");
pub const SCRIPT: &str = include_str!("live.js");

/// A full page: `title`, the CSRF token for the logout form, the body.
pub fn page(title: &str, csrf: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Portico ops" }
                style { (PreEscaped(CSS)) }
                script src="/ops/live.js" defer {}
            }
            body data-live="off" {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Dashboard" {
                        a href="/ops" { "Overview" }
                        a href="/ops/repairs" { "Repairs" }
                        form.lookup method="get" action="/ops/domains" role="search" {
                            label for="lookup-hostname" { "Domain" }
                            input id="lookup-hostname" name="hostname" type="search" placeholder="hostname" required;
                            button type="submit" { "Open" }
                        }
                    }
                    span #live role="status" aria-live="polite" { "static (no live updates)" }
                    form method="post" action="/ops/logout" {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { "Log out" }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

pub fn login(error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · Portico ops" }
                style { (PreEscaped(CSS)) }
            }
            body {
                main #main .login {
                    h1 { "Portico ops" }
                    @if let Some(e) = error {
                        p.error role="alert" #login-error { (e) }
                    }
                    form method="post" action="/ops/login" {
                        label for="token" { "Operator token" }
                        input #token name="token" type="password" autocomplete="current-password" required autofocus;
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

pub fn error_page(status: StatusCode, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (status.as_u16()) " · Portico ops" } style { (PreEscaped(CSS)) } }
            body { main #main {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                p.error role="alert" { (message) }
                p { a href="/ops" { "Back to the overview" } }
            } }
        }
    }
}

/// A live section: re-rendered from `src` when one of `topics` changes.
/// Detail pages pass no heading (the page's `h1` names them).
pub fn live_section(
    id: &str,
    src: &str,
    topics: &str,
    heading: Option<&str>,
    body: Markup,
) -> Markup {
    html! {
        @match heading {
            Some(heading) => section id=(id) data-src=(src) data-topics=(topics) aria-labelledby=(format!("{id}-h")) {
                h2 id=(format!("{id}-h")) { (heading) }
                (body)
            },
            None => section id=(id) data-src=(src) data-topics=(topics) { (body) },
        }
    }
}

/// `<time>` with the instant and how long ago it was.
pub fn ago(t: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) title=(t.to_rfc3339()) { (age(Utc::now() - t)) } }
}

pub fn maybe_ago(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => ago(t),
        None => html! { span.muted { "never" } },
    }
}

/// `12 s ago`, `4 min ago`, `3 h ago`, `2 d ago`; `in 5 min` for the future.
pub fn age(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    let (n, future) = (s.unsigned_abs(), s < 0);
    let text = match n {
        0..=119 => format!("{n} s"),
        120..=7199 => format!("{} min", n / 60),
        7200..=172_799 => format!("{} h", n / 3600),
        _ => format!("{} d", n / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

pub fn secs(s: f64) -> String {
    age(chrono::Duration::seconds(s.max(0.0) as i64))
        .trim_end_matches(" ago")
        .to_string()
}

pub fn subject_link(kind: &str, id: Uuid, name: &str) -> Markup {
    let href = match kind {
        "edge" => format!("/ops/edges/{id}"),
        _ => format!("/ops/domains/{id}"),
    };
    html! { a href=(href) { (name) } }
}

/// Runs with their steps, or a line saying there are none.
pub fn runs(runs: &[RunRecord], steps: &[StepRecord], csrf: &str, back: &str) -> Markup {
    html! {
        @if runs.is_empty() {
            p.muted { "No repair runs." }
        } @else {
            ul.runs {
                @for r in runs {
                    (run(r, steps.iter().filter(|s| s.run_id == r.id), csrf, back))
                }
            }
        }
    }
}

fn run<'a>(
    r: &RunRecord,
    steps: impl Iterator<Item = &'a StepRecord>,
    csrf: &str,
    back: &str,
) -> Markup {
    html! {
        li.run id=(format!("run-{}", r.id)) data-status=(r.status) {
            div.runhead {
                span class=(format!("badge {}", r.status)) { (r.status) }
                strong { (r.kind) }
                " on " (r.subject_kind) " " (subject_link(&r.subject_kind, r.subject_id, &r.subject_name))
                " · opened " (ago(r.opened_at))
                @if let Some(o) = &r.outcome { " · outcome " strong { (o) } }
                @if let Some(n) = &r.outcome_note { " (" (n) ")" }
                @if r.status == "open" {
                    @if let Some(at) = r.next_step_at { " · next rung " (r.next_rung) " " (ago(at)) }
                }
                @if let Some(a) = r.alert_id { " · paged (alert " code { (short(a)) } ")" }
            }
            p.reason { (r.reason) }
            ol.timeline aria-label="Steps" {
                @for s in steps {
                    li id=(format!("step-{}", s.id)) class=(format!("step {}", s.result)) {
                        span class=(format!("badge {}", s.result)) { (s.result) }
                        " rung " (s.rung) ": " strong { (s.action) }
                        " · " (ago(s.started_at))
                        @if s.started_by != "ladder" { " · by " (s.started_by) }
                        @if !s.checked.is_empty() {
                            div { "checked: " (s.checked)
                                @match s.check_passed { Some(true) => " (passed)", Some(false) => " (still failing)", None => "" }
                            }
                        }
                        @if !s.did.is_empty() { div { "did: " (s.did) } }
                    }
                }
            }
            (actions(r, csrf, back))
        }
    }
}

/// Pause / resume / retry / close, as POST forms.
fn actions(r: &RunRecord, csrf: &str, back: &str) -> Markup {
    let available: &[&str] = match r.status.as_str() {
        "open" => &["pause", "retry", "close"],
        "paused" => &["resume", "retry", "close"],
        _ => &[],
    };
    html! {
        @if !available.is_empty() {
            div.actions {
                @for a in available {
                    form method="post" action=(format!("/ops/repairs/{}/{a}", r.id)) {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="back" value=(back);
                        button type="submit" id=(format!("{a}-{}", r.id)) { (capitalise(a)) }
                    }
                }
            }
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

pub fn short(id: Uuid) -> String {
    id.simple().to_string().chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_a_person_says_them() {
        assert_eq!(age(chrono::Duration::seconds(5)), "5 s ago");
        assert_eq!(age(chrono::Duration::seconds(600)), "10 min ago");
        assert_eq!(age(chrono::Duration::seconds(-300)), "in 5 min");
        assert_eq!(age(chrono::Duration::days(3)), "3 d ago");
        assert_eq!(secs(90.0), "90 s");
    }

    #[test]
    fn values_are_escaped() {
        let html = live_section("x", "/y", "edges", Some("<b>"), html! {}).into_string();
        assert!(html.contains("&lt;b&gt;"));
    }
}
