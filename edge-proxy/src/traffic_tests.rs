use super::*;
use portico_protocol::HostConfig;

fn route(host: &str) -> Arc<Route> {
    Arc::new(Route {
        config: HostConfig::new(host),
        targets: Vec::new(),
    })
}

fn request(route: &Arc<Route>, at_unix: i64, status: u16, latency_ms: u32) -> Event {
    Event {
        route: route.clone(),
        at_unix,
        kind: EventKind::Request {
            status,
            latency_ms,
            connect_failures: 0,
        },
    }
}

#[test]
fn latency_buckets_are_upper_bounds_inclusive() {
    assert_eq!(bucket(0), 0);
    assert_eq!(bucket(5), 0);
    assert_eq!(bucket(6), 1);
    assert_eq!(bucket(10_000), 10);
    assert_eq!(bucket(10_001), 11);
    assert_eq!(bucket(u32::MAX), 11);
    assert_eq!(LATENCY_BOUNDS_MS[11], LATENCY_BOUND_INF_MS);
}

#[test]
fn windows_start_on_multiples_of_ten_seconds() {
    assert_eq!(window_start(1_700_000_000), 1_700_000_000);
    assert_eq!(window_start(1_700_000_009), 1_700_000_000);
    assert_eq!(window_start(1_700_000_010), 1_700_000_010);
    assert_eq!(window_start(-1), -10);
}

#[test]
fn events_fold_into_their_host_and_window() {
    let (a, b) = (route("a.example.com"), route("*.b.example"));
    let mut w = Windows::default();
    let t0 = 1_700_000_000;
    for e in [
        request(&a, t0, 200, 3),
        request(&a, t0 + 9, 204, 7),
        request(&a, t0 + 9, 404, 7),
        request(&a, t0 + 10, 502, 20_000),
        request(&b, t0 + 1, 301, 100),
        request(&a, t0 + 2, 0, 1),
        Event {
            route: a.clone(),
            at_unix: t0 + 3,
            kind: EventKind::Request {
                status: 502,
                latency_ms: 3_000,
                connect_failures: 2,
            },
        },
        Event {
            route: b.clone(),
            at_unix: t0 + 4,
            kind: EventKind::TlsHandshakeFailure,
        },
    ] {
        w.fold(&e);
    }
    // The first window ends at t0+10; it closes 2 s later, not before.
    assert!(w.close(t0 + 11, false).is_empty());
    let closed = w.close(t0 + 12, false);
    assert_eq!(closed.len(), 2);
    let (wb, wa) = (&closed[0], &closed[1]);
    assert_eq!((wb.host.as_str(), wb.start_unix), ("*.b.example", t0));
    assert_eq!(
        (wb.requests, wb.status_3xx, wb.tls_handshake_failures),
        (1, 1, 1)
    );
    assert_eq!(wb.latency_buckets_ms, vec![(100, 1)]);
    assert_eq!(wa.host, "a.example.com");
    assert_eq!(wa.secs, WINDOW_SECS);
    assert_eq!(wa.requests, 5);
    assert_eq!(
        (wa.status_2xx, wa.status_3xx, wa.status_4xx, wa.status_5xx),
        (2, 0, 1, 1)
    );
    assert_eq!(wa.upstream_connect_failures, 2);
    assert_eq!(wa.latency_buckets_ms, vec![(5, 2), (10, 2), (5_000, 1)]);
    let rest = w.close(t0 + 22, false);
    assert_eq!(rest.len(), 1);
    assert_eq!((rest[0].start_unix, rest[0].status_5xx), (t0 + 10, 1));
    assert_eq!(rest[0].latency_buckets_ms, vec![(LATENCY_BOUND_INF_MS, 1)]);
}

#[test]
fn a_late_event_counts_in_the_oldest_open_window() {
    let a = route("a.example.com");
    let mut w = Windows::default();
    let t0 = 1_700_000_000;
    w.fold(&request(&a, t0, 200, 1));
    assert_eq!(w.close(t0 + 12, false).len(), 1);
    // Its window is gone: it goes to the next one, never a second copy.
    w.fold(&request(&a, t0 + 5, 200, 1));
    let all = w.close(t0 + 12, true);
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].start_unix, all[0].requests), (t0 + 10, 1));
}

#[test]
fn closing_everything_flushes_the_open_windows() {
    let a = route("a.example.com");
    let mut w = Windows::default();
    w.fold(&request(&a, 1_700_000_000, 200, 1));
    w.fold(&request(&a, 1_700_000_015, 200, 1));
    assert!(w.close(1_700_000_001, false).is_empty());
    assert_eq!(w.close(1_700_000_001, true).len(), 2);
}

fn window(i: i64) -> StatsWindow {
    StatsWindow {
        host: "a.example.com".into(),
        start_unix: i,
        secs: WINDOW_SECS,
        requests: 1,
        status_2xx: 1,
        status_3xx: 0,
        status_4xx: 0,
        status_5xx: 0,
        upstream_connect_failures: 0,
        tls_handshake_failures: 0,
        latency_buckets_ms: Vec::new(),
    }
}

#[test]
fn a_full_outbox_drops_the_oldest_and_counts() {
    let o = Outbox::new(3);
    assert_eq!(o.push((0..2).map(window).collect()), 0);
    assert_eq!(o.push((2..5).map(window).collect()), 2);
    assert_eq!(o.dropped(), 2);
    let taken = o.take(2);
    assert_eq!(
        taken.iter().map(|w| w.start_unix).collect::<Vec<_>>(),
        [2, 3]
    );
    o.push(vec![window(5), window(6)]);
    // Three newer windows are waiting: putting two back drops the oldest two.
    assert_eq!(o.put_back(taken), 2);
    assert_eq!(o.dropped(), 4);
    let left: Vec<i64> = o.take(10).iter().map(|w| w.start_unix).collect();
    assert_eq!(left, [4, 5, 6]);
}

#[test]
fn a_full_queue_drops_and_counts_without_waiting() {
    let metrics = Metrics::new().unwrap();
    let t = Traffic::new(2, 10);
    let a = route("a.example.com");
    // Nothing is queued before an aggregator takes the receiver.
    t.record(request(&a, 1, 200, 1), &metrics);
    let mut rx = t.take_receiver().unwrap();
    assert!(t.take_receiver().is_none());
    for _ in 0..5 {
        t.record(request(&a, 1, 200, 1), &metrics);
    }
    assert_eq!(t.events_dropped(), 3);
    assert_eq!(metrics.report_events_dropped.get(), 3);
    assert!(rx.try_recv().is_ok());
    assert!(rx.try_recv().is_ok());
    assert!(rx.try_recv().is_err());
}
