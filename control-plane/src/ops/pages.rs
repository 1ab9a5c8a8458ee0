//! Page handlers: the overview and its fragments, one domain, one edge, and
//! the repairs list. Detail pages are one live section each; `?fragment=1`
//! returns just that section (what `live.js` swaps in).

use super::OpsState;
use super::chart;
use super::error::OpsError;
use super::sections::{self, SECTIONS};
use super::session::Session;
use super::view::{self, ago, live_section, maybe_ago, page};
use crate::db;
use crate::db::dashboard::{LIST_LIMIT, RunFilter};
use axum::extract::{Path, Query, RawQuery, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

/// Detail pages chart the last hour.
const CHART_SECS: f64 = 3600.0;
/// Edges report 10-second windows.
const WINDOW_SECS: f64 = 10.0;

pub async fn overview(State(state): State<OpsState>, session: Session) -> Result<Markup, OpsError> {
    let mut body = Vec::with_capacity(SECTIONS.len());
    for name in SECTIONS {
        body.push(sections::render(&state, name, &session.csrf).await?);
    }
    Ok(page(
        "Overview",
        &session.csrf,
        html! { @for s in &body { (s) } },
    ))
}

pub async fn fragment(
    State(state): State<OpsState>,
    session: Session,
    Path(name): Path<String>,
) -> Result<Markup, OpsError> {
    sections::render(&state, &name, &session.csrf).await
}

#[derive(Deserialize)]
pub struct FragmentQuery {
    #[serde(default)]
    fragment: Option<String>,
}

#[derive(Deserialize)]
pub struct Lookup {
    #[serde(default)]
    hostname: String,
}

/// `GET /ops/domains?hostname=...`: the domain's page, found by name.
pub async fn lookup(
    State(state): State<OpsState>,
    _session: Session,
    Query(q): Query<Lookup>,
) -> Result<Response, OpsError> {
    let name = q.hostname.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return Err(OpsError::BadRequest("enter a hostname".into()));
    }
    match db::domains::find_by_hostname(&state.app.pool, &name).await? {
        Some(d) => Ok(Redirect::to(&format!("/ops/domains/{}", d.id)).into_response()),
        None => Err(OpsError::NotFound("domain")),
    }
}

pub async fn domain(
    State(state): State<OpsState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<FragmentQuery>,
) -> Result<Response, OpsError> {
    let id = parse_id(&id, "domain")?;
    let pool = &state.app.pool;
    let d = db::dashboard::domain(pool, id)
        .await?
        .ok_or(OpsError::NotFound("domain"))?;
    let health = db::health::for_subject(pool, "domain", id).await?;
    let traffic = db::dashboard::domain_traffic(pool, id, CHART_SECS).await?;
    let (runs, steps) = history(&state, id).await?;
    let back = format!("/ops/domains/{id}");
    let body = html! {
        div.grid {
            div {
                h2 { "Domain" }
                dl.facts {
                    dt { "Status" } dd { span class=(format!("badge {}", d.status)) #domain-status { (d.status) } }
                    dt { "TLS" } dd { span class=(format!("badge {}", d.tls_status)) { (d.tls_status) } }
                    dt { "Targets" } dd { (d.targets.join(", ")) }
                    dt { "Tenant" } dd { code { (d.tenant_id) } }
                    dt { "Added" } dd { (ago(d.created_at)) }
                }
                h2 { "Certificate" }
                @match (&d.cert_names, d.cert_not_after) {
                    (Some(names), Some(not_after)) => dl.facts {
                        dt { "Names" } dd { (names.join(", ")) }
                        dt { "Expires" } dd { (ago(not_after)) }
                        dt { "Issued" } dd { (maybe_ago(d.cert_issued_at)) }
                    },
                    _ => p.muted { "No certificate stored." },
                }
            }
            div {
                h2 { "DNS diagnosis" }
                p { "Checked " (maybe_ago(d.dns_checked_at)) }
                @match &d.dns_diagnosis {
                    Some(diag) => pre { (serde_json::to_string_pretty(diag).unwrap_or_default()) },
                    None => p.muted { "Not checked yet." },
                }
            }
        }
        (health_table(&health))
        h2 { "Traffic, last hour" }
        (chart::traffic(&traffic, WINDOW_SECS))
        h2 { "Repair history" }
        (view::runs(&runs, &steps, &session.csrf, &back))
    };
    let section = live_section(
        "detail",
        &format!("{back}?fragment=1"),
        "domains runs health",
        None,
        body,
    );
    Ok(respond(q, &d.hostname, &session, section))
}

pub async fn edge(
    State(state): State<OpsState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<FragmentQuery>,
) -> Result<Response, OpsError> {
    let id = parse_id(&id, "edge")?;
    let pool = &state.app.pool;
    let e = db::dashboard::edge(pool, id)
        .await?
        .ok_or(OpsError::NotFound("edge"))?;
    let current = db::config::state(pool).await?.version;
    let health = db::health::for_subject(pool, "edge", id).await?;
    let traffic = db::dashboard::edge_traffic(pool, id, CHART_SECS).await?;
    let (runs, steps) = history(&state, id).await?;
    let name = e.name.clone();
    let stale_after = state.app.settings.config.edge_stale_after;
    let v = crate::api::edges::EdgeView::new(e, current, stale_after);
    let failing = health.iter().any(|h| h.failing);
    let status = if failing { "unhealthy" } else { v.status };
    let back = format!("/ops/edges/{id}");
    let body = html! {
        div.grid {
            dl.facts {
                dt { "Status" } dd { span class=(format!("badge {status}")) #edge-status { (status) } }
                dt { "Region" } dd { (v.region) }
                dt { "Build" } dd { (v.build.as_deref().unwrap_or("–")) }
                dt { "Heartbeat" } dd { (maybe_ago(v.last_seen_at)) }
                dt { "Applied version" } dd { @match v.applied_version { Some(a) => (a), None => "–" } " of " (current)
                    @if let Some(l) = v.lag { " (lag " (l) ")" } }
                dt { "Uptime" } dd { @match v.uptime_secs { Some(s) => (view::secs(s as f64)), None => "–" } }
                dt { "Hosts / certificates" } dd { (opt(v.hosts)) " / " (opt(v.certificates)) }
            }
            div {
                h2 { "Rejected config" }
                @match &v.rejection {
                    Some(r) => pre.error #rejection { (serde_json::to_string_pretty(r).unwrap_or_default()) },
                    None => p.muted { "None: the edge applied the last config it received." },
                }
            }
        }
        h2 { "Counters" }
        pre { (serde_json::to_string_pretty(&v.counters).unwrap_or_default()) }
        (health_table(&health))
        h2 { "Traffic, last hour" }
        (chart::traffic(&traffic, WINDOW_SECS))
        h2 { "Repair history" }
        (view::runs(&runs, &steps, &session.csrf, &back))
    };
    let section = live_section(
        "detail",
        &format!("{back}?fragment=1"),
        "edges runs health",
        None,
        body,
    );
    Ok(respond(q, &format!("Edge {name}"), &session, section))
}

/// `GET /ops/alerts/{id}`: one alert (the page emails link to).
pub async fn alert(
    State(state): State<OpsState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<FragmentQuery>,
) -> Result<Response, OpsError> {
    let id = parse_id(&id, "alert")?;
    let a = db::alerts::get(&state.app.pool, id)
        .await?
        .ok_or(OpsError::NotFound("alert"))?;
    let body = html! {
        dl.facts {
            dt { "Status" } dd { span class=(format!("badge {}", a.status)) #alert-status { (a.status) } }
            dt { "Severity" } dd { (a.severity) }
            dt { "Subject" } dd {
                @match a.subject_id {
                    Some(s) => (view::subject_link(&a.subject_kind, s, &format!("{} {}", a.subject_kind, view::short(s)))),
                    None => "the platform",
                }
            }
            dt { "Opened" } dd { (ago(a.opened_at)) }
            dt { "Resolved" } dd { (maybe_ago(a.resolved_at)) @if let Some(n) = &a.resolution_note { " — " (n) } }
            dt { "Page email" } dd {
                @if let Some(t) = a.page_sent_at { "sent " (ago(t)) } @else { "not sent" }
                " (" (a.page_attempts) " attempts)"
                @if let Some(e) = &a.last_email_error { div.error { "last error: " (e) } }
            }
        }
        h2 { "Message" }
        pre { (a.body) }
    };
    let back = format!("/ops/alerts/{id}");
    let section = live_section(
        "detail",
        &format!("{back}?fragment=1"),
        "alerts",
        None,
        body,
    );
    Ok(respond(q, &a.title, &session, section))
}

#[derive(Deserialize, Default)]
pub struct RepairsQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    fragment: Option<String>,
}

const STATUSES: [&str; 3] = ["open", "paused", "closed"];
const KINDS: [&str; 4] = ["edge_unreachable", "certificate", "upstream", "dns"];

pub async fn repairs(
    State(state): State<OpsState>,
    session: Session,
    RawQuery(raw): RawQuery,
    Query(q): Query<RepairsQuery>,
) -> Result<Response, OpsError> {
    let pick = |v: &str, allowed: &[&str], what: &str| -> Result<Option<String>, OpsError> {
        match v {
            "" => Ok(None),
            v if allowed.contains(&v) => Ok(Some(v.to_string())),
            _ => Err(OpsError::BadRequest(format!("unknown {what}"))),
        }
    };
    let subject = q.subject.trim();
    if subject.len() > 253 {
        return Err(OpsError::BadRequest("subject is too long".into()));
    }
    let filter = RunFilter {
        status: pick(&q.status, &STATUSES, "status")?,
        kind: pick(&q.kind, &KINDS, "kind")?,
        subject: (!subject.is_empty()).then(|| subject.to_string()),
    };
    let pool = &state.app.pool;
    let runs = db::dashboard::runs(pool, &filter, LIST_LIMIT * 2).await?;
    let ids: Vec<Uuid> = runs.iter().map(|r| r.id).collect();
    let steps = db::repairs::steps_of(pool, &ids).await?;
    let query: String = raw
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.starts_with("fragment="))
        .collect::<Vec<_>>()
        .join("&");
    let here = if query.is_empty() {
        "/ops/repairs".to_string()
    } else {
        format!("/ops/repairs?{query}")
    };
    let sep = if query.is_empty() { '?' } else { '&' };
    let body = html! {
        p.muted { (runs.len()) " runs, unfinished first." }
        (view::runs(&runs, &steps, &session.csrf, &here))
    };
    let section = live_section(
        "detail",
        &format!("{here}{sep}fragment=1"),
        "runs",
        Some("Runs"),
        body,
    );
    if q.fragment.is_some() {
        return Ok(Html(section.into_string()).into_response());
    }
    let form = html! {
        form.filter method="get" action="/ops/repairs" {
            (select("status", "Status", &STATUSES, &q.status))
            (select("kind", "Kind", &KINDS, &q.kind))
            label for="f-subject" { "Subject (name or id)"
                input #f-subject name="subject" type="search" value=(subject);
            }
            button type="submit" { "Filter" }
        }
        (section)
    };
    Ok(page("Repairs", &session.csrf, form).into_response())
}

fn select(name: &str, label: &str, options: &[&str], current: &str) -> Markup {
    html! {
        label for=(format!("f-{name}")) { (label)
            select id=(format!("f-{name}")) name=(name) {
                option value="" selected[current.is_empty()] { "any" }
                @for o in options { option value=(o) selected[*o == current] { (o) } }
            }
        }
    }
}

fn respond(q: FragmentQuery, title: &str, session: &Session, section: Markup) -> Response {
    if q.fragment.is_some() {
        Html(section.into_string()).into_response()
    } else {
        page(title, &session.csrf, section).into_response()
    }
}

/// The subject's runs (newest first, 50 at most) and their steps.
async fn history(
    state: &OpsState,
    id: Uuid,
) -> Result<(Vec<db::repairs::RunRecord>, Vec<db::repairs::StepRecord>), OpsError> {
    let filter = db::repairs::RunFilter {
        status: None,
        kind: None,
        subject_id: Some(id),
        tenant_id: None,
        before: None,
        limit: LIST_LIMIT,
    };
    let runs = db::repairs::list(&state.app.pool, &filter).await?;
    let ids: Vec<Uuid> = runs.iter().map(|r| r.id).collect();
    let steps = db::repairs::steps_of(&state.app.pool, &ids).await?;
    Ok((runs, steps))
}

fn health_table(rows: &[db::health::HealthState]) -> Markup {
    html! {
        h2 { "Checks" }
        @if rows.is_empty() {
            p.muted { "No health checks recorded yet." }
        } @else {
            table {
                thead { tr { th scope="col" { "Check" } th scope="col" { "State" } th scope="col" { "Last check" }
                    th.num scope="col" { "Fails in a row" } th.num scope="col" { "Passes in a row" } th scope="col" { "Detail" } } }
                tbody {
                    @for h in rows {
                        @let state = if h.failing { "failing" } else { "ok" };
                        tr id=(format!("check-{}", h.kind)) data-status=(state) {
                            th scope="row" { (h.kind) }
                            td { span class=(format!("badge {}", if h.failing { "failed" } else { "ok" })) { (state) } }
                            td { (ago(h.checked_at)) (if h.last_passed { " (passed)" } else { " (failed)" }) }
                            td.num { (h.consecutive_failures) } td.num { (h.consecutive_passes) }
                            td { (h.last_detail) }
                        }
                    }
                }
            }
        }
    }
}

fn opt(v: Option<i64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "–".into())
}

fn parse_id(raw: &str, what: &'static str) -> Result<Uuid, OpsError> {
    Uuid::parse_str(raw).map_err(|_| OpsError::NotFound(what))
}
