//! The ops dashboard over plain HTTP: login and sessions, CSRF and origin
//! checks, pages rendered from seeded rows, the empty overview, and the live
//! event stream. The browser-driven test is `ops_dashboard.rs`.

use futures::StreamExt;
use portico_e2e::ops::{self, FormExt, OpsClient, csrf_of, no_redirects};
use portico_e2e::{OPERATOR_TOKEN, TestApp, eventually};
use std::time::Duration;

async fn app(vars: &[(&str, &str)]) -> TestApp {
    TestApp::spawn(vars).await.unwrap()
}

fn pool(app: &TestApp) -> &sqlx::PgPool {
    &app.running().state.pool
}

#[tokio::test]
async fn login_with_the_token_gives_a_session_and_a_wrong_one_the_form_again() {
    let app = app(&[]).await;
    let http = no_redirects();
    let resp = http.get(app.url("/ops")).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/ops/login");

    let resp = http
        .post(app.url("/ops/login"))
        .header("origin", &app.base)
        .form(&[("token", "not-the-token-not-the-token-not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("set-cookie").is_none());
    let page = resp.text().await.unwrap();
    assert!(page.contains("That is not the operator token"), "{page}");
    assert!(page.contains("<form method=\"post\" action=\"/ops/login\""));

    let resp = http
        .post(app.url("/ops/login"))
        .header("origin", &app.base)
        .form(&[("token", OPERATOR_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in [
        "portico_ops=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/ops",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(attr), "{attr} missing from {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain-http public URL: {cookie}"
    );
    // Only the hash of the cookie's id is stored.
    let id = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("portico_ops=");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ops_sessions WHERE encode(id_hash, 'hex') = $1")
            .bind(id)
            .fetch_one(pool(&app))
            .await
            .unwrap();
    assert_eq!(stored, 0);
    assert_eq!(app.count("ops_sessions").await.unwrap(), 1);

    let c = OpsClient::login(&app.base, OPERATOR_TOKEN).await.unwrap();
    let (status, page) = c.get("/ops").await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<h1>Overview</h1>"));
    assert!(page.contains("href=\"#main\""), "skip link");
}

#[tokio::test]
async fn the_cookie_is_secure_behind_https() {
    let app = app(&[("PORTICO_PUBLIC_URL", "https://ops.portico.test")]).await;
    let resp = no_redirects()
        .post(app.url("/ops/login"))
        .header("origin", "https://ops.portico.test")
        .form(&[("token", OPERATOR_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert!(
        resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
}

#[tokio::test]
async fn login_attempts_are_rate_limited() {
    let app = app(&[("PORTICO_OPS_LOGIN_PER_MINUTE", "3")]).await;
    let http = no_redirects();
    let attempt = |token: &'static str| {
        http.post(app.url("/ops/login"))
            .header("origin", &app.base)
            .form(&[("token", token)])
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            attempt("wrong-wrong-wrong-wrong-wrong-wrong")
                .await
                .unwrap()
                .status(),
            401
        );
    }
    let resp = attempt("wrong-wrong-wrong-wrong-wrong-wrong")
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Too many login attempts")
    );
    // The right token waits too: guessing cannot outpace the limit.
    assert_eq!(attempt(OPERATOR_TOKEN).await.unwrap().status(), 429);
}

#[tokio::test]
async fn an_expired_or_logged_out_session_goes_back_to_the_login() {
    let app = app(&[]).await;
    let c = OpsClient::login(&app.base, OPERATOR_TOKEN).await.unwrap();
    sqlx::query("UPDATE ops_sessions SET expires_at = now() - interval '1 second'")
        .execute(pool(&app))
        .await
        .unwrap();
    let resp = c
        .http
        .get(app.url("/ops"))
        .header("cookie", &c.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/ops/login");

    let c = OpsClient::login(&app.base, OPERATOR_TOKEN).await.unwrap();
    let resp = c.post("/ops/logout", &[("csrf", &c.csrf)]).await.unwrap();
    assert_eq!(resp.status(), 303);
    assert!(
        resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(c.get("/ops").await.unwrap().0, 303);
}

#[tokio::test]
async fn posts_without_the_csrf_token_or_from_another_origin_are_refused() {
    let app = app(&[]).await;
    let c = OpsClient::login(&app.base, OPERATOR_TOKEN).await.unwrap();
    let logout = || {
        c.http
            .post(app.url("/ops/logout"))
            .header("cookie", &c.cookie)
    };

    let missing = logout()
        .header("origin", &app.base)
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 403);
    assert!(missing.text().await.unwrap().contains("CSRF token"));
    let wrong = logout()
        .header("origin", &app.base)
        .form(&[("csrf", "0".repeat(64))])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let cross = logout()
        .header("origin", "https://evil.example")
        .form(&[("csrf", &c.csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    let fetch_site = logout()
        .header("sec-fetch-site", "cross-site")
        .header("origin", &app.base)
        .form(&[("csrf", &c.csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(fetch_site.status(), 403);
    let no_origin = logout().form(&[("csrf", &c.csrf)]).send().await.unwrap();
    assert_eq!(no_origin.status(), 403);
    // Login CSRF: a foreign page cannot log a browser into our dashboard.
    let login = no_redirects()
        .post(app.url("/ops/login"))
        .header("origin", "https://evil.example")
        .form(&[("token", OPERATOR_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 403);
    // A run action with a wrong token changes nothing.
    let s = ops::seed(pool(&app), &app.base, "fra-1", "shop.example.com")
        .await
        .unwrap();
    let resp = c
        .post(
            &format!("/ops/repairs/{}/close", s.run),
            &[("csrf", "nope")],
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let status: String = sqlx::query_scalar("SELECT status FROM repair_runs WHERE id = $1")
        .bind(s.run)
        .fetch_one(pool(&app))
        .await
        .unwrap();
    assert_eq!(status, "open");
    // All of this while the session itself still works.
    assert_eq!(c.get("/ops").await.unwrap().0, 200);
}

#[tokio::test]
async fn pages_render_the_seeded_rows() {
    let app = app(&[]).await;
    let s = ops::seed(pool(&app), &app.base, "fra-1", "shop.example.com")
        .await
        .unwrap();
    let c = OpsClient::login(&app.base, OPERATOR_TOKEN).await.unwrap();

    let (status, page) = c.get("/ops").await.unwrap();
    assert_eq!(status, 200);
    let row = section(&page, &format!("id=\"edge-{}\"", s.edge));
    assert!(row.contains("data-status=\"unhealthy\""), "{row}");
    assert!(row.contains("edge_unreachable"), "{row}");
    assert!(
        page.contains("shop.example.com"),
        "expiring certificate listed"
    );
    assert!(page.contains(&format!("id=\"run-{}\"", s.run)));
    assert!(page.contains("probed the machine: stopped"));
    assert!(page.contains("Edge unreachable: restart did not help"));
    assert!(page.contains("id=\"queue-check_domain_dns\""), "{page}");
    assert!(page.contains("<strong id=\"domain-total\">1</strong>"));

    let (status, page) = c.get(&format!("/ops/domains/{}", s.domain)).await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("cname_matches"), "DNS diagnosis shown");
    assert!(page.contains("<svg"), "traffic chart");
    assert_eq!(page.matches("<rect").count(), 30, "one bar per window");
    assert!(page.contains("3000 requests"), "{page}");
    assert!(
        !page.contains("SEALED-KEY") && !page.contains("5345414c"),
        "never the key"
    );
    let (_, by_name) = c
        .get("/ops/domains?hostname=Shop.Example.com")
        .await
        .unwrap();
    assert!(by_name.is_empty(), "the lookup redirects");

    let (status, page) = c.get(&format!("/ops/edges/{}", s.edge)).await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("portico-edge 0.1.0 (test)"));
    assert!(
        page.contains("certificate for shop.example.com does not parse"),
        "rejection shown"
    );
    assert!(
        page.contains("probed the machine: stopped"),
        "repair history"
    );

    let alert: uuid::Uuid = sqlx::query_scalar("SELECT id FROM alerts")
        .fetch_one(pool(&app))
        .await
        .unwrap();
    let (status, page) = c.get(&format!("/ops/alerts/{alert}")).await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("Edge unreachable: restart did not help"));
    assert!(
        page.contains(&format!("href=\"/ops/edges/{}\"", s.edge)),
        "links the subject"
    );

    let (_, page) = c
        .get("/ops/repairs?status=open&kind=edge_unreachable&subject=fra-1")
        .await
        .unwrap();
    assert!(page.contains(&format!("id=\"run-{}\"", s.run)));
    assert!(
        page.contains(&format!("id=\"pause-{}\"", s.run)),
        "actions offered"
    );
    let (_, page) = c.get("/ops/repairs?kind=dns").await.unwrap();
    assert!(!page.contains(&format!("id=\"run-{}\"", s.run)));
    let (status, _) = c.get("/ops/repairs?status=bogus").await.unwrap();
    assert_eq!(status, 400);
    assert_eq!(c.get("/ops/domains/not-a-uuid").await.unwrap().0, 404);
    assert_eq!(
        c.get(&format!("/ops/edges/{}", uuid::Uuid::now_v7()))
            .await
            .unwrap()
            .0,
        404
    );
    assert_eq!(c.get("/ops/fragments/nope").await.unwrap().0, 404);
    let (status, fragment) = c.get("/ops/fragments/runs").await.unwrap();
    assert_eq!(status, 200);
    assert!(fragment.starts_with("<section id=\"runs\""), "{fragment}");
}

/// The `<tr ...>` that contains `marker`.
fn section<'a>(page: &'a str, marker: &str) -> &'a str {
    let at = page
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in page"));
    let start = page[..at].rfind("<tr").unwrap();
    let end = at + page[at..].find("</tr>").unwrap();
    &page[start..end]
}

#[tokio::test]
async fn the_overview_renders_with_no_rows() {
    let app = app(&[]).await;
    let c = OpsClient::login(&app.base, OPERATOR_TOKEN).await.unwrap();
    let (status, page) = c.get("/ops").await.unwrap();
    assert_eq!(status, 200);
    for empty in [
        "No edges registered.",
        "No certificate expires within 14 days.",
        "No queued, running or failed jobs.",
        "No repair runs.",
        "No alerts.",
        "<strong id=\"domain-total\">0</strong>",
    ] {
        assert!(page.contains(empty), "{empty} missing");
    }
    assert!(csrf_of(&page).is_some());
}

#[tokio::test]
async fn without_an_operator_token_the_dashboard_says_it_is_disabled() {
    let app = app(&[("PORTICO_OPERATOR_TOKEN", "")]).await;
    for path in ["/ops/login", "/ops"] {
        let resp = no_redirects().get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert!(
            resp.text()
                .await
                .unwrap()
                .contains("set PORTICO_OPERATOR_TOKEN")
        );
    }
}

#[tokio::test]
async fn the_event_stream_says_what_changed_after_a_row_changes() {
    let app = app(&[("PORTICO_OPS_MAX_EVENT_CLIENTS", "1")]).await;
    let s = ops::seed(pool(&app), &app.base, "fra-1", "shop.example.com")
        .await
        .unwrap();
    let c = OpsClient::login(&app.base, OPERATOR_TOKEN).await.unwrap();
    let resp = c
        .http
        .get(app.url("/ops/events"))
        .header("cookie", &c.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // The response is sent once the process LISTENs: changes from now on are heard.
    let mut body = resp.bytes_stream();

    // Bounded: a second client is refused while the first is connected.
    let second = c
        .http
        .get(app.url("/ops/events"))
        .header("cookie", &c.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 503);

    ops::step(pool(&app), s.run, 1, "restart", "restarted the machine")
        .await
        .unwrap();
    let mut seen = String::new();
    let event = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if let Some(e) = seen.split("\n\n").find(|e| e.contains("event: changed")) {
                return e.to_string();
            }
        }
        panic!("stream ended: {seen}");
    })
    .await
    .expect("no changed event within 20 s");
    assert!(event.contains("data: runs"), "{event}");

    ops::heartbeat(pool(&app), s.edge, 1).await.unwrap();
    seen.clear();
    let event = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if let Some(e) = seen.split("\n\n").find(|e| e.contains("edges")) {
                return e.to_string();
            }
        }
        panic!("stream ended: {seen}");
    })
    .await
    .expect("no edges event within 20 s");
    assert!(event.contains("event: changed"), "{event}");

    // Without a session there is no stream.
    let anon = no_redirects()
        .get(app.url("/ops/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 303);
    drop(body);
    // The slot is returned when the client goes away.
    let again = eventually(10, "the event slot to free up", || async {
        let r = c
            .http
            .get(app.url("/ops/events"))
            .header("cookie", &c.cookie)
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(r)
    })
    .await
    .unwrap();

    // A graceful stop does not wait for open dashboards: their streams end.
    let mut stream = again.bytes_stream();
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("stopping waited for an open event stream")
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream did not end");
}

#[tokio::test]
async fn run_buttons_pause_resume_retry_and_close_a_run() {
    let app = app(&[]).await;
    let s = ops::seed(pool(&app), &app.base, "fra-1", "shop.example.com")
        .await
        .unwrap();
    let c = OpsClient::login(&app.base, OPERATOR_TOKEN).await.unwrap();
    let status = || async {
        sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT status, outcome FROM repair_runs WHERE id = $1",
        )
        .bind(s.run)
        .fetch_one(pool(&app))
        .await
        .unwrap()
    };
    let back = "/ops/repairs?status=open";
    let press = |action: &'static str| {
        let path = format!("/ops/repairs/{}/{action}", s.run);
        let csrf = c.csrf.clone();
        let c = &c;
        async move {
            c.post(&path, &[("csrf", csrf.as_str()), ("back", back)])
                .await
                .unwrap()
        }
    };

    let resp = press("pause").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"],
        back,
        "back where the button was"
    );
    assert_eq!(status().await.0, "paused");
    let (_, page) = c.get("/ops/repairs").await.unwrap();
    assert!(
        page.contains(&format!("id=\"resume-{}\"", s.run)),
        "a paused run offers resume"
    );
    assert!(!page.contains(&format!("id=\"pause-{}\"", s.run)));

    assert_eq!(press("resume").await.status(), 303);
    assert_eq!(status().await.0, "open");
    assert_eq!(press("retry").await.status(), 303);
    assert_eq!(status().await.0, "open");

    assert_eq!(press("close").await.status(), 303);
    assert_eq!(
        status().await,
        ("closed".into(), Some("closed_by_operator".into()))
    );
    let again = press("pause").await;
    assert_eq!(again.status(), 409);
    assert!(
        again
            .text()
            .await
            .unwrap()
            .contains("the repair run is closed")
    );
    let (_, page) = c.get("/ops/repairs").await.unwrap();
    assert!(
        !page.contains(&format!("id=\"close-{}\"", s.run)),
        "no buttons on a closed run"
    );

    // Unknown actions and runs, and a `back` that leaves the dashboard.
    let resp = c
        .post(
            &format!("/ops/repairs/{}/delete", s.run),
            &[("csrf", c.csrf.as_str())],
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let other = ops::open_run(pool(&app), s.edge, "fra-1").await.unwrap();
    let resp = c
        .post(
            &format!("/ops/repairs/{other}/pause"),
            &[("csrf", c.csrf.as_str()), ("back", "https://evil.example/")],
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()["location"], "/ops/repairs");
}
