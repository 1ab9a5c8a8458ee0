use super::*;
use crate::db::health::TrafficSums;
use uuid::Uuid;

fn settings() -> HealthSettings {
    crate::settings::Settings::from_sources(
        [(
            "DATABASE_URL".to_string(),
            "postgres://x@127.0.0.1/x".to_string(),
        )]
        .into(),
    )
    .map(|s| s.health)
    .unwrap()
}

fn now() -> DateTime<Utc> {
    "2026-12-03T12:00:00Z".parse().unwrap()
}

fn edge_row() -> EdgeSnapshot {
    EdgeSnapshot {
        id: Uuid::nil(),
        name: "edge-1".into(),
        region: "local".into(),
        created_at: now() - chrono::Duration::hours(1),
        last_seen_at: Some(now() - chrono::Duration::seconds(5)),
        applied_version: Some(10),
        rejection: None,
        requests: 0,
        failures: 0,
        others_requests: 0,
        others_failures: 0,
    }
}

fn domain_row() -> DomainSnapshot {
    DomainSnapshot {
        id: Uuid::nil(),
        tenant_id: Uuid::nil(),
        hostname: "shop.example.com".into(),
        targets: vec!["127.0.0.1:9".into()],
        status: "active".into(),
        tls_status: "active".into(),
        dns_diagnosis: None,
        cert_not_after: Some(now() + chrono::Duration::days(60)),
        missing_on: vec![],
        traffic: TrafficSums::default(),
    }
}

const STALE: Duration = Duration::from_secs(60);

#[test]
fn a_fresh_current_edge_passes() {
    let c = edge(
        &edge_row(),
        10,
        Some(&Probe::Ready),
        &settings(),
        STALE,
        now(),
    );
    assert!(c.passed, "{}", c.detail);
}

#[test]
fn a_silent_edge_fails_with_how_long() {
    let mut e = edge_row();
    e.last_seen_at = Some(now() - chrono::Duration::seconds(300));
    let c = edge(&e, 10, None, &settings(), STALE, now());
    assert!(!c.passed);
    assert_eq!(c.detail, "no heartbeat for 5 min");
}

#[test]
fn a_down_probe_fails_even_with_a_fresh_heartbeat() {
    let c = edge(
        &edge_row(),
        10,
        Some(&Probe::Down("signal: 9".into())),
        &settings(),
        STALE,
        now(),
    );
    assert!(!c.passed);
    assert!(c.detail.contains("probe: down: signal: 9"), "{}", c.detail);
}

#[test]
fn lag_and_rejections_fail() {
    let mut e = edge_row();
    e.rejection = Some(serde_json::json!({"version": 12, "reason": "bad key", "at_unix": 1}));
    let c = edge(&e, 12, None, &settings(), STALE, now());
    assert!(!c.passed);
    assert!(
        c.detail.contains("serves config v10, current is v12"),
        "{}",
        c.detail
    );
    assert!(
        c.detail.contains("refused config v12: bad key"),
        "{}",
        c.detail
    );
}

#[test]
fn an_edge_failing_what_others_serve_fails_but_not_when_all_fail() {
    let mut e = edge_row();
    e.requests = 100;
    e.failures = 60;
    e.others_requests = 1000;
    e.others_failures = 10;
    let c = edge(&e, 10, None, &settings(), STALE, now());
    assert!(!c.passed);
    assert!(
        c.detail.contains("60 of 100 requests failed through it"),
        "{}",
        c.detail
    );
    assert!(
        c.detail.contains("(1 % through the other edges)"),
        "{}",
        c.detail
    );
    // Every edge fails alike: the upstreams, not this edge.
    e.others_failures = 500;
    assert!(edge(&e, 10, None, &settings(), STALE, now()).passed);
    // Too little traffic to say.
    e.others_failures = 10;
    e.requests = 10;
    e.failures = 10;
    assert!(edge(&e, 10, None, &settings(), STALE, now()).passed);
}

#[test]
fn a_new_edge_gets_time_for_its_first_heartbeat() {
    let mut e = edge_row();
    e.last_seen_at = None;
    e.created_at = now() - chrono::Duration::seconds(10);
    assert!(edge(&e, 10, None, &settings(), STALE, now()).passed);
    e.created_at = now() - chrono::Duration::seconds(600);
    let c = edge(&e, 10, None, &settings(), STALE, now());
    assert!(!c.passed);
    assert!(c.detail.contains("never sent a heartbeat"));
}

fn kind_of(results: &[(Kind, Check)], kind: Kind) -> Option<&Check> {
    results.iter().find(|(k, _)| *k == kind).map(|(_, c)| c)
}

#[test]
fn a_healthy_domain_passes_every_kind() {
    let probe = UpstreamProbe::Connected {
        target: "127.0.0.1:9".into(),
        ms: 1,
    };
    let r = domain(&domain_row(), Some(&probe), &settings(), now());
    assert_eq!(r.len(), 3);
    assert!(r.iter().all(|(_, c)| c.passed), "{r:?}");
}

#[test]
fn certificate_problems_are_named() {
    let mut d = domain_row();
    d.cert_not_after = Some(now() + chrono::Duration::days(2));
    d.missing_on = vec!["edge-2".into()];
    let r = domain(&d, None, &settings(), now());
    let c = kind_of(&r, Kind::Certificate).unwrap();
    assert!(!c.passed);
    assert!(c.detail.contains("expires in 2 d"), "{}", c.detail);
    assert!(
        c.detail.contains("edge(s) edge-2 serve no certificate"),
        "{}",
        c.detail
    );
}

#[test]
fn no_certificate_check_before_one_is_expected() {
    let mut d = domain_row();
    d.cert_not_after = None;
    d.tls_status = "none".into();
    let r = domain(&d, None, &settings(), now());
    assert!(kind_of(&r, Kind::Certificate).is_none());
    d.tls_status = "active".into();
    let r = domain(&d, None, &settings(), now());
    assert!(!kind_of(&r, Kind::Certificate).unwrap().passed);
}

#[test]
fn upstream_uses_the_traffic_ratio_when_there_is_traffic() {
    let mut d = domain_row();
    d.traffic = TrafficSums {
        requests: 100,
        status_5xx: 40,
        upstream_connect_failures: 15,
        tls_handshake_failures: 0,
    };
    // The probe would pass; the traffic decides.
    let probe = UpstreamProbe::Connected {
        target: "x:1".into(),
        ms: 1,
    };
    let c = kind_of(
        &domain(&d, Some(&probe), &settings(), now()),
        Kind::Upstream,
    )
    .cloned()
    .unwrap();
    assert!(!c.passed);
    assert!(
        c.detail.starts_with("55 of 100 requests failed"),
        "{}",
        c.detail
    );
    d.traffic.status_5xx = 10;
    let c = kind_of(&domain(&d, None, &settings(), now()), Kind::Upstream)
        .cloned()
        .unwrap();
    assert!(c.passed, "{}", c.detail);
}

#[test]
fn upstream_falls_back_to_the_probe_when_idle() {
    let probe = UpstreamProbe::Failed {
        target: "127.0.0.1:9".into(),
        error: "connection refused".into(),
    };
    let r = domain(&domain_row(), Some(&probe), &settings(), now());
    let c = kind_of(&r, Kind::Upstream).unwrap();
    assert!(!c.passed);
    assert!(c.detail.contains("connection refused"));
}

#[test]
fn a_misconfigured_domain_is_checked_for_dns_only() {
    let mut d = domain_row();
    d.status = "misconfigured".into();
    d.dns_diagnosis = Some(
        serde_json::json!({"reasons": [{"code": "cname_wrong"}], "hint": "Point it at edge.portico.test."}),
    );
    let r = domain(&d, None, &settings(), now());
    assert_eq!(r.len(), 1);
    let c = kind_of(&r, Kind::Dns).unwrap();
    assert!(!c.passed);
    assert!(
        c.detail.contains("misconfigured: cname_wrong"),
        "{}",
        c.detail
    );
    assert!(
        c.detail.ends_with("Point it at edge.portico.test."),
        "{}",
        c.detail
    );
}
