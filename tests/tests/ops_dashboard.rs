//! The ops dashboard in a real browser: a `portico-control-plane serve`
//! process, headless Chromium through chromedriver.
//!
//! - An operator logs in through the form and sees the edge; then the
//!   database changes the way the health checks and the ladder change it,
//!   and the page shows the edge unhealthy and the new repair step without
//!   reloading; Enter on Pause pauses the run. Takes the screenshots
//!   (`docs/screenshots/` with `PORTICO_SAVE_SCREENSHOTS=1`).
//! - The real thing: the control plane runs its own edge process; the test
//!   kills it and watches, without reloading, the row turn unhealthy, the
//!   ladder's steps appear (the restart among them) and the row come back.
//!
//! Skips (with a message) only when Chromium or chromedriver is not
//! installed; `scripts/test` installs both, so CI runs it.

use portico_e2e::cluster::ControlPlane;
use portico_e2e::ops;
use portico_e2e::webdriver::{self, Browser};
use portico_e2e::{OPERATOR_TOKEN, fresh_database};
use std::path::PathBuf;

/// `docs/screenshots/` with `PORTICO_SAVE_SCREENSHOTS=1` (to refresh the
/// committed ones), else a temp dir (the screenshots are still taken).
fn screenshots() -> PathBuf {
    if std::env::var("PORTICO_SAVE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
    } else {
        let dir = std::env::temp_dir().join(format!(
            "portico-screenshots-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

#[tokio::test]
async fn an_operator_watches_an_edge_fail_and_the_ladder_climb_without_reloading() {
    if let Some(why) = webdriver::unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let db = fresh_database().await.unwrap();
    let cp = ControlPlane::start(&db, &[]).await.unwrap();
    let base = cp.base();
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let edge = ops::register_edge(&base, "fra-1").await.unwrap();
    ops::heartbeat(&pool, edge, 0).await.unwrap();
    ops::reject(&pool, edge).await.unwrap();
    let domain = ops::domain(&pool, "shop.example.com", edge).await.unwrap();

    let b = Browser::start().await.unwrap();
    b.goto(&format!("{base}/ops")).await.unwrap();
    b.wait_for(
        10,
        "the login form",
        "return location.pathname === '/ops/login'",
    )
    .await
    .unwrap();
    b.type_into("#token", OPERATOR_TOKEN).await.unwrap();
    b.click("button[type=submit]").await.unwrap();
    let row = format!("document.getElementById('edge-{edge}')");
    b.wait_for(
        10,
        "the edge row",
        &format!("return !!{row} && {row}.dataset.status === 'up'"),
    )
    .await
    .unwrap();
    b.wait_for(
        10,
        "the live connection",
        "return document.body.dataset.live === 'on'",
    )
    .await
    .unwrap();
    // Set on this page only: a reload would lose it.
    b.eval("window.__noReload = 'kept'; return true")
        .await
        .unwrap();

    ops::edge_failing(&pool, edge, "no heartbeat for 90 s")
        .await
        .unwrap();
    b.wait_for(
        20,
        "the edge row to turn unhealthy",
        &format!("return {row}.dataset.status === 'unhealthy'"),
    )
    .await
    .unwrap();
    let run = ops::open_run(&pool, edge, "fra-1").await.unwrap();
    let probe = ops::step(&pool, run, 0, "probe", "probed the machine: stopped")
        .await
        .unwrap();
    b.wait_for(
        20,
        "the run and its first step",
        &format!("return !!document.getElementById('step-{probe}')"),
    )
    .await
    .unwrap();
    let restart = ops::step(&pool, run, 1, "restart", "restarted the machine")
        .await
        .unwrap();
    b.wait_for(
        20,
        "the second step",
        &format!("return !!document.getElementById('step-{restart}')"),
    )
    .await
    .unwrap();
    let alert = ops::alert(&pool, edge, run).await.unwrap();
    b.wait_for(
        20,
        "the alert",
        &format!("return !!document.getElementById('alert-{alert}')"),
    )
    .await
    .unwrap();
    let kept = b
        .eval("return window.__noReload || 'reloaded'")
        .await
        .unwrap();
    assert_eq!(
        kept, "kept",
        "the page reloaded instead of swapping sections"
    );
    let text = b
        .eval(&format!(
            "return document.getElementById('run-{run}').innerText"
        ))
        .await
        .unwrap();
    assert!(
        text.as_str().unwrap().contains("restarted the machine"),
        "{text}"
    );

    // Keyboard only: Enter on the Pause button posts its form (with the
    // CSRF token) and comes back to the overview with the run paused.
    b.press_enter(&format!("#pause-{run}")).await.unwrap();
    b.wait_for(
        20,
        "the run to show paused",
        &format!("return document.getElementById('run-{run}')?.dataset.status === 'paused'"),
    )
    .await
    .unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM repair_runs WHERE id = $1")
        .bind(run)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "paused");

    let dir = screenshots();
    b.fit_page().await.unwrap();
    b.screenshot(&dir.join("overview.png")).await.unwrap();
    for (path, file) in [
        (format!("/ops/domains/{domain}"), "domain.png"),
        (format!("/ops/edges/{edge}"), "edge.png"),
        ("/ops/repairs".to_string(), "repairs.png"),
    ] {
        b.goto(&format!("{base}{path}")).await.unwrap();
        b.wait_for(10, "the page", "return document.readyState === 'complete'")
            .await
            .unwrap();
        b.fit_page().await.unwrap();
        b.screenshot(&dir.join(file)).await.unwrap();
    }
    drop(b);
    drop(cp);
}

#[tokio::test]
async fn an_operator_watches_a_killed_edge_come_back_through_the_ladder_live() {
    if let Some(why) = webdriver::unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let db = fresh_database().await.unwrap();
    let dir = std::env::temp_dir().join(format!(
        "portico-ops-edges-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let dir = dir.display().to_string();
    // Ladder waits × 0.3: the probe rung waits 3 s, so "unhealthy" shows
    // for a while before the restart brings the edge back.
    let cp = ControlPlane::start(
        &db,
        &[
            ("PORTICO_WORKER_IN_SERVE", "true"),
            ("PORTICO_INFRA", "local"),
            ("PORTICO_LOCAL_EDGE_DIR", &dir),
            ("PORTICO_HEALTH_TICK_MS", "200"),
            ("PORTICO_HEALTH_EDGE_INTERVAL_MS", "300"),
            ("PORTICO_REPAIR_TIME_SCALE", "0.3"),
        ],
    )
    .await
    .unwrap();
    let base = cp.base();
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let edge: uuid::Uuid = portico_e2e::eventually(30, "the local edge to heartbeat", || async {
        sqlx::query_scalar(
            "SELECT id FROM edges WHERE name = 'local-1' AND last_seen_at IS NOT NULL",
        )
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
    })
    .await
    .unwrap();

    let b = Browser::start().await.unwrap();
    b.goto(&format!("{base}/ops/login")).await.unwrap();
    b.type_into("#token", OPERATOR_TOKEN).await.unwrap();
    b.click("button[type=submit]").await.unwrap();
    let row = format!("document.getElementById('edge-{edge}')");
    b.wait_for(
        30,
        "the edge row, up",
        &format!("return !!{row} && {row}.dataset.status === 'up'"),
    )
    .await
    .unwrap();
    b.wait_for(
        10,
        "the live connection",
        "return document.body.dataset.live === 'on'",
    )
    .await
    .unwrap();
    b.eval("window.__noReload = 'kept'; return true")
        .await
        .unwrap();

    let pids = cp.edge_pids().unwrap();
    assert_eq!(pids.len(), 1);
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    b.wait_for(
        30,
        "the edge row to turn unhealthy",
        &format!("return {row}.dataset.status === 'unhealthy'"),
    )
    .await
    .unwrap();
    let restart: uuid::Uuid = portico_e2e::eventually(60, "the ladder's restart step", || async {
        sqlx::query_scalar(
            "SELECT s.id FROM repair_steps s JOIN repair_runs r ON r.id = s.run_id
             WHERE r.subject_id = $1 AND s.action = 'restart' AND s.finished_at IS NOT NULL",
        )
        .bind(edge)
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
    })
    .await
    .unwrap();
    b.wait_for(
        30,
        "the restart step on the page",
        &format!("return !!document.getElementById('step-{restart}')"),
    )
    .await
    .unwrap();
    b.wait_for(
        60,
        "the edge row to come back up",
        &format!("return {row}.dataset.status === 'up'"),
    )
    .await
    .unwrap();
    let kept = b
        .eval("return window.__noReload || 'reloaded'")
        .await
        .unwrap();
    assert_eq!(
        kept, "kept",
        "the page reloaded instead of swapping sections"
    );
    let outcome: Option<String> = portico_e2e::eventually(30, "the run to close", || async {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT outcome FROM repair_runs WHERE subject_id = $1 AND status = 'closed'",
        )
        .bind(edge)
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
    })
    .await
    .unwrap();
    assert_eq!(outcome.as_deref(), Some("recovered"));
    drop(b);
    drop(cp);
}
