//! The overview's sections. Each is loaded and rendered on its own so that
//! the page and `/ops/fragments/{name}` share one function per section.

use super::OpsState;
use super::chart::pct;
use super::error::OpsError;
use super::view::{self, ago, live_section, maybe_ago};
use crate::api::edges::heartbeat_status;
use crate::db;
use crate::db::dashboard::EdgeSummary;
use maud::{Markup, html};

/// Traffic on the overview: the last minute.
pub const TRAFFIC_WINDOW_SECS: f64 = 60.0;
/// Certificates expiring within this many days are listed.
pub const EXPIRY_DAYS: f64 = 14.0;

/// The sections `/ops/fragments/{name}` serves, in page order.
pub const SECTIONS: [&str; 6] = [
    "edges",
    "domains",
    "certificates",
    "queues",
    "runs",
    "alerts",
];

pub async fn render(state: &OpsState, name: &str, csrf: &str) -> Result<Markup, OpsError> {
    match name {
        "edges" => edges(state).await,
        "domains" => domains(state).await,
        "certificates" => certificates(state).await,
        "queues" => queues(state).await,
        "runs" => runs(state, csrf).await,
        "alerts" => alerts(state).await,
        _ => Err(OpsError::NotFound("section")),
    }
}

async fn edges(state: &OpsState) -> Result<Markup, OpsError> {
    let pool = &state.app.pool;
    let current = db::config::state(pool).await?.version;
    let rows = db::dashboard::edges(pool, TRAFFIC_WINDOW_SECS).await?;
    let stale_after = state.app.settings.config.edge_stale_after;
    let body = html! {
        p.muted { "Config version " strong #config-version { (current) } ". Traffic over the last minute." }
        @if rows.is_empty() {
            p.muted { "No edges registered." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Edge" } th scope="col" { "Region" } th scope="col" { "Status" }
                    th scope="col" { "Heartbeat" } th.num scope="col" { "Config lag" }
                    th.num scope="col" { "req/s" } th.num scope="col" { "5xx %" } th scope="col" { "Build" }
                } }
                tbody {
                    @for e in &rows { (edge_row(e, current, stale_after)) }
                }
            }
        }
    };
    Ok(live_section(
        "edges",
        "/ops/fragments/edges",
        "edges",
        Some("Edges"),
        body,
    ))
}

/// `unhealthy` when a check fails, else what the heartbeat says.
pub fn edge_status(e: &EdgeSummary, stale_after: std::time::Duration) -> &'static str {
    if e.failing.is_empty() {
        heartbeat_status(e.last_seen_at, stale_after)
    } else {
        "unhealthy"
    }
}

fn edge_row(e: &EdgeSummary, current: u64, stale_after: std::time::Duration) -> Markup {
    let status = edge_status(e, stale_after);
    let lag = e
        .applied_version
        .map(|a| current.saturating_sub(db::config::as_u64(a)));
    html! {
        tr id=(format!("edge-{}", e.id)) class=(status) data-status=(status) {
            th scope="row" { a href=(format!("/ops/edges/{}", e.id)) { (e.name) } }
            td { (e.region) }
            td {
                span class=(format!("badge {status}")) { (status) }
                @if !e.failing.is_empty() {
                    " " span.muted { (e.failing.join(", ")) }
                    @if !e.failing_detail.is_empty() { div.muted { (e.failing_detail) } }
                }
            }
            td { (maybe_ago(e.last_seen_at)) }
            td.num { @match lag { Some(l) => (l), None => span.muted { "–" } } }
            td.num { (format!("{:.1}", e.requests as f64 / TRAFFIC_WINDOW_SECS)) }
            td.num { (format!("{:.1}", pct(e.errors, e.requests))) }
            td { (e.build.as_deref().unwrap_or("–")) }
        }
    }
}

async fn domains(state: &OpsState) -> Result<Markup, OpsError> {
    let counts = db::dashboard::domain_counts(&state.app.pool).await?;
    let total: i64 = counts.iter().map(|c| c.n).sum();
    let mut by_status: Vec<(String, i64)> = Vec::new();
    let mut by_tls: Vec<(String, i64)> = Vec::new();
    for c in &counts {
        add(&mut by_status, &c.status, c.n);
        add(&mut by_tls, &c.tls_status, c.n);
    }
    let body = html! {
        p { strong #domain-total { (total) } (if total == 1 { " domain." } else { " domains." }) }
        div.grid {
            (count_table("Status", &by_status))
            (count_table("TLS", &by_tls))
        }
    };
    Ok(live_section(
        "domains",
        "/ops/fragments/domains",
        "domains",
        Some("Domains"),
        body,
    ))
}

fn add(into: &mut Vec<(String, i64)>, key: &str, n: i64) {
    match into.iter_mut().find(|(k, _)| k == key) {
        Some((_, total)) => *total += n,
        None => into.push((key.to_string(), n)),
    }
}

fn count_table(label: &str, rows: &[(String, i64)]) -> Markup {
    html! {
        table {
            thead { tr { th scope="col" { (label) } th.num scope="col" { "Domains" } } }
            tbody {
                @for (k, n) in rows {
                    tr { td { span class=(format!("badge {k}")) { (k) } } td.num { (n) } }
                }
            }
        }
    }
}

async fn certificates(state: &OpsState) -> Result<Markup, OpsError> {
    let rows = db::dashboard::expiring(&state.app.pool, EXPIRY_DAYS).await?;
    let body = html! {
        @if rows.is_empty() {
            p.muted { "No certificate expires within 14 days." }
        } @else {
            table {
                thead { tr { th scope="col" { "Domain" } th scope="col" { "Expires" } } }
                tbody {
                    @for c in &rows {
                        tr { th scope="row" { a href=(format!("/ops/domains/{}", c.domain_id)) { (c.hostname) } }
                             td { (ago(c.not_after)) } }
                    }
                }
            }
            @if rows.len() as i64 >= db::dashboard::LIST_LIMIT { p.muted { "Showing the first " (rows.len()) "." } }
        }
    };
    Ok(live_section(
        "certificates",
        "/ops/fragments/certificates",
        "domains",
        Some("Certificates expiring within 14 days"),
        body,
    ))
}

async fn queues(state: &OpsState) -> Result<Markup, OpsError> {
    let rows = db::dashboard::queues(&state.app.pool).await?;
    let body = html! {
        @if rows.is_empty() {
            p.muted { "No queued, running or failed jobs." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Queue" } th.num scope="col" { "Pending" } th.num scope="col" { "Running" }
                    th.num scope="col" { "Failed" } th.num scope="col" { "Oldest pending" }
                } }
                tbody {
                    @for q in &rows {
                        tr id=(format!("queue-{}", q.queue)) {
                            th scope="row" { (q.queue) }
                            td.num { (q.pending) } td.num { (q.running) }
                            td.num class=(if q.failed > 0 { "failed" } else { "" }) { (q.failed) }
                            td.num { @match q.oldest_pending_secs { Some(s) => (view::secs(s)), None => "–" } }
                        }
                    }
                }
            }
        }
    };
    // Job tables have no trigger: the section refreshes with any other change.
    Ok(live_section(
        "queues",
        "/ops/fragments/queues",
        "edges domains runs",
        Some("Job queues"),
        body,
    ))
}

async fn runs(state: &OpsState, csrf: &str) -> Result<Markup, OpsError> {
    let pool = &state.app.pool;
    let runs = db::dashboard::open_runs(pool).await?;
    let ids: Vec<uuid::Uuid> = runs.iter().map(|r| r.id).collect();
    let steps = db::repairs::steps_of(pool, &ids).await?;
    let body = view::runs(&runs, &steps, csrf, "/ops");
    Ok(live_section(
        "runs",
        "/ops/fragments/runs",
        "runs",
        Some("Open repair runs"),
        body,
    ))
}

async fn alerts(state: &OpsState) -> Result<Markup, OpsError> {
    let rows = db::alerts::list(&state.app.pool, None, 20).await?;
    let body = html! {
        @if rows.is_empty() {
            p.muted { "No alerts." }
        } @else {
            table {
                thead { tr { th scope="col" { "Alert" } th scope="col" { "Status" } th scope="col" { "Opened" } th scope="col" { "Email" } } }
                tbody {
                    @for a in &rows {
                        tr id=(format!("alert-{}", a.id)) {
                            th scope="row" { a href=(format!("/ops/alerts/{}", a.id)) { (a.title) } }
                            td { span class=(format!("badge {}", a.status)) { (a.status) } }
                            td { (ago(a.opened_at)) }
                            td {
                                @if a.page_sent_at.is_some() { "sent" }
                                @else if let Some(e) = &a.last_email_error { span.error { (e) } }
                                @else { span.muted { "–" } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(live_section(
        "alerts",
        "/ops/fragments/alerts",
        "alerts",
        Some("Recent alerts"),
        body,
    ))
}
