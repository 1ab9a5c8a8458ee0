use super::*;

const NOW: i64 = 1_800_000_000;
const WEEK: Duration = Duration::from_secs(7 * 86_400);

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).unwrap()
}

fn window(host: &str, start_unix: i64) -> StatsWindow {
    StatsWindow {
        host: host.into(),
        start_unix,
        secs: 10,
        requests: 3,
        status_2xx: 2,
        status_3xx: 0,
        status_4xx: 0,
        status_5xx: 1,
        upstream_connect_failures: 1,
        tls_handshake_failures: 0,
        latency_buckets_ms: vec![(5, 2), (2_147_483_647, 1)],
    }
}

fn report(windows: Vec<StatsWindow>) -> Report {
    Report {
        v: 1,
        edge_id: "fra-1".into(),
        windows,
        dropped: 0,
        events_dropped: 0,
    }
}

fn fields(r: &Report) -> Vec<(String, String)> {
    match validate(r, "fra-1", now(), WEEK) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| (e.field, e.code)).collect(),
    }
}

fn one(field: &str, code: &str) -> Vec<(String, String)> {
    vec![(field.to_owned(), code.to_owned())]
}

#[test]
fn a_good_report_passes_and_converts_to_rows() {
    let r = report(vec![
        window("a.example.com", NOW - 20),
        window("*.b.example", NOW - 20),
    ]);
    assert_eq!(fields(&r), []);
    let rows = rows(&r);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].window_start.timestamp(), NOW - 20);
    assert_eq!(rows[0].latency_bounds_ms, [5, i32::MAX]);
    assert_eq!(rows[0].latency_counts, [2, 1]);
    assert_eq!(
        (rows[1].host.as_str(), rows[1].status_5xx),
        ("*.b.example", 1)
    );
}

#[test]
fn the_version_and_the_edge_must_be_right() {
    let mut r = report(Vec::new());
    r.v = 0;
    assert_eq!(fields(&r), one("v", "unsupported_version"));
    r.v = PROTOCOL_VERSION + 1;
    assert_eq!(fields(&r), one("v", "unsupported_version"));
    let mut r = report(Vec::new());
    r.edge_id = "ams-1".into();
    assert_eq!(fields(&r), one("edge_id", "wrong_edge"));
}

#[test]
fn too_many_windows_are_refused() {
    let windows = (0..=MAX_WINDOWS as i64)
        .map(|i| window(&format!("h{i}.example.com"), NOW))
        .collect();
    assert_eq!(fields(&report(windows)), one("windows", "too_many"));
}

#[test]
fn absurd_times_and_lengths_name_the_window() {
    let cases = [
        (
            window("a.example.com", NOW + 3_601),
            "windows[0].start_unix",
            "in_the_future",
        ),
        (
            window("a.example.com", NOW - 8 * 86_400),
            "windows[0].start_unix",
            "too_old",
        ),
        (
            StatsWindow {
                secs: 0,
                ..window("a.example.com", NOW)
            },
            "windows[0].secs",
            "out_of_range",
        ),
        (
            StatsWindow {
                secs: 3_601,
                ..window("a.example.com", NOW)
            },
            "windows[0].secs",
            "out_of_range",
        ),
        (
            window(&"a".repeat(254), NOW),
            "windows[0].host",
            "invalid_host",
        ),
        (window("", NOW), "windows[0].host", "invalid_host"),
        (window("a b", NOW), "windows[0].host", "invalid_host"),
        (
            StatsWindow {
                requests: u64::MAX,
                ..window("a.example.com", NOW)
            },
            "windows[0].requests",
            "too_large",
        ),
        (
            StatsWindow {
                latency_buckets_ms: vec![(10, 1), (5, 1)],
                ..window("a.example.com", NOW)
            },
            "windows[0].latency_buckets_ms",
            "invalid_histogram",
        ),
        (
            StatsWindow {
                latency_buckets_ms: vec![(u32::MAX, 1)],
                ..window("a.example.com", NOW)
            },
            "windows[0].latency_buckets_ms",
            "invalid_histogram",
        ),
    ];
    for (w, field, code) in cases {
        assert_eq!(fields(&report(vec![w])), one(field, code), "{field} {code}");
    }
    // An hour ahead is clock drift, not absurd.
    assert_eq!(
        fields(&report(vec![window("a.example.com", NOW + 3_600)])),
        []
    );
}

#[test]
fn a_repeated_window_is_refused_and_errors_are_bounded() {
    let w = window("a.example.com", NOW);
    assert_eq!(
        fields(&report(vec![w.clone(), w])),
        one("windows[1].start_unix", "duplicate")
    );
    let bad: Vec<StatsWindow> = (0..100).map(|i| window("", NOW - i * 10)).collect();
    assert_eq!(fields(&report(bad)).len(), 20);
}
