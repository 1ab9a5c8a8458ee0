//! `LocalProcesses` with real processes: the `portico-edge` binary started,
//! probed, restarted, replaced, scaled and stopped; a process that exits
//! shows as down; edges registered in a fresh database once, then reused;
//! an edge that follows a real control plane becomes ready.
//!
//! The edge binary is `PORTICO_EDGE_BIN` or `target/debug/portico-edge`
//! (`scripts/test` builds it; by hand: `cargo build -p portico-edge`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use portico_control_plane::app::{self, Options};
use portico_control_plane::db;
use portico_control_plane::infra::local::{ControlPlaneLink, LocalConfig, LocalProcesses};
use portico_control_plane::infra::{
    Infra, InfraError, MachineId, MachineState, Probe, wait_until_ready,
};
use portico_control_plane::settings::Settings;
use sqlx::{Connection, PgConnection};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn edge_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PORTICO_EDGE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/portico-edge")
        });
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: {} is missing; run `cargo build -p portico-edge` (scripts/test does) or set PORTICO_EDGE_BIN",
            path.display()
        );
        None
    }
}

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "portico-infra-{what}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn quiet(config: LocalConfig) -> LocalConfig {
    LocalConfig {
        env: vec![("RUST_LOG".into(), "warn".into())],
        ..config
    }
}

fn alive(pid: u32) -> bool {
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Probes until the edge answers at all (ready or not) or is down.
async fn settle(infra: &dyn Infra, id: &MachineId) -> Probe {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let probe = infra.probe(id).await.unwrap();
        if !matches!(probe, Probe::Unreachable(_)) {
            return probe;
        }
        assert!(Instant::now() < deadline, "{id} never answered: {probe}");
        tokio::time::sleep(Duration::from_millis(50)).await; // allow-sleep: polling with a deadline
    }
}

fn not_ready(probe: &Probe) -> bool {
    matches!(probe, Probe::NotReady(why) if why.contains("503"))
}

#[tokio::test]
async fn a_local_edge_starts_restarts_is_replaced_scales_and_stops() {
    let Some(bin) = edge_binary() else { return };
    let dir = temp_dir("lifecycle");
    let local = LocalProcesses::new(quiet(LocalConfig::new(bin, &dir)));

    let first = local.spawn(None).await.unwrap();
    assert_eq!(first.id.as_str(), "local-1");
    assert_eq!(first.name, "local-1");
    assert_eq!(first.state, MachineState::Running);
    assert!(first.addresses.admin.ip().is_loopback());
    // No control plane: the edge serves but has no config, so it is not ready.
    let probe = settle(&local, &first.id).await;
    assert!(not_ready(&probe), "{probe:?}");
    assert!(dir.join("edge-1").is_dir() && dir.join("edge-1.log").is_file());

    let before = local.pid(&first.id).await.unwrap().unwrap();
    let restarted = local.restart(&first.id).await.unwrap();
    assert_eq!(restarted.addresses, first.addresses);
    let after = local.pid(&first.id).await.unwrap().unwrap();
    assert_ne!(before, after);
    assert!(!alive(before), "the old process {before} still runs");
    let probe = settle(&local, &first.id).await;
    assert!(not_ready(&probe), "{probe:?}");

    std::fs::write(dir.join("edge-1/marker"), b"old data").unwrap();
    let replaced = local.replace(&first.id).await.unwrap();
    assert_eq!(replaced.addresses, first.addresses);
    assert!(
        !dir.join("edge-1/marker").exists(),
        "replace starts with empty data"
    );
    let probe = settle(&local, &replaced.id).await;
    assert!(not_ready(&probe), "{probe:?}");

    let two = local.scale("local", 2).await.unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[1].id.as_str(), "local-2");
    assert_ne!(two[0].addresses.admin, two[1].addresses.admin);
    let probe = settle(&local, &two[1].id).await;
    assert!(not_ready(&probe), "{probe:?}");
    let second = local.pid(&two[1].id).await.unwrap().unwrap();
    assert!(matches!(
        local.scale("fra", 1).await,
        Err(InfraError::UnknownRegion { .. })
    ));
    let one = local.scale("local", 1).await.unwrap();
    assert_eq!(one.len(), 1);
    assert!(!alive(second), "scaling down left {second} running");

    let last = local.pid(&first.id).await.unwrap().unwrap();
    local.stop_all().await.unwrap();
    assert!(!alive(last), "stop_all left {last} running");
    assert!(local.list().await.unwrap().is_empty());
    assert!(matches!(
        local.probe(&first.id).await,
        Err(InfraError::UnknownMachine(_))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_process_that_exits_is_down_and_a_missing_binary_is_named() {
    let dir = temp_dir("exits");
    let local = LocalProcesses::new(LocalConfig::new("/bin/false", &dir));
    let m = local.spawn(None).await.unwrap();
    let probe = wait_until_ready(&local, &m.id, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        matches!(&probe, Probe::Down(why) if why.contains("exited") && why.contains("edge-1.log")),
        "{probe:?}"
    );
    let listed = local.list().await.unwrap();
    assert!(matches!(&listed[0].state, MachineState::Exited(how) if how.contains('1')));
    local.stop_all().await.unwrap();

    let missing = LocalProcesses::new(LocalConfig::new(dir.join("no-such-edge"), &dir));
    let err = missing.spawn(None).await.unwrap_err();
    assert!(matches!(err, InfraError::EdgeBinaryMissing { .. }));
    assert!(
        err.to_string().contains("cargo build -p portico-edge"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn fresh_database() -> String {
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = PgConnection::connect(&admin)
        .await
        .expect("Postgres at DATABASE_URL");
    let name = format!("portico_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.split_once('?').map_or(admin.as_str(), |(b, _)| b);
    format!("{}/{name}", base.rsplit_once('/').unwrap().0)
}

/// A stand-in edge that records the `PORTICO_EDGE_*` environment and its
/// arguments it was given, then exits.
fn recording_edge(dir: &std::path::Path) -> PathBuf {
    let script = dir.join("fake-edge.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv | grep '^PORTICO_EDGE_' | sort > {out}/env.txt\necho \"$@\" > {out}/args.txt\n",
            out = dir.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    script
}

async fn spawn_and_wait_for_exit(local: &LocalProcesses) -> String {
    let m = local.spawn(None).await.unwrap();
    let probe = wait_until_ready(local, &m.id, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(matches!(probe, Probe::Down(_)), "{probe:?}");
    local.stop_all().await.unwrap();
    m.name
}

#[tokio::test]
async fn edges_are_registered_once_and_get_their_token_by_environment() {
    let url = portico_control_plane::secret::Secret::new(fresh_database().await);
    let pool = db::connect(&url, 2).await.unwrap();
    db::migrate(&pool).await.unwrap();
    let dir = temp_dir("registry");
    let config = || LocalConfig {
        control_plane: Some(ControlPlaneLink {
            url: "http://127.0.0.1:9".into(),
            pool: pool.clone(),
        }),
        ..LocalConfig::new(recording_edge(&dir), &dir)
    };

    assert_eq!(
        spawn_and_wait_for_exit(&LocalProcesses::new(config())).await,
        "local-1"
    );
    let token = std::fs::read_to_string(dir.join("edge-1.token")).unwrap();
    let token = token.trim();
    assert!(token.starts_with("pte_"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("edge-1.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the token file is private");
    }
    let env = std::fs::read_to_string(dir.join("env.txt")).unwrap();
    assert!(
        env.contains("PORTICO_EDGE_CONTROL_PLANE=http://127.0.0.1:9\n"),
        "{env}"
    );
    assert!(env.contains("PORTICO_EDGE_NAME=local-1\n"), "{env}");
    assert!(
        env.contains(&format!("PORTICO_EDGE_TOKEN={token}\n")),
        "{env}"
    );
    let args = std::fs::read_to_string(dir.join("args.txt")).unwrap();
    assert!(!args.contains(token), "the token is not in argv: {args}");
    assert!(
        args.contains("--data-dir") && args.contains("--admin 127.0.0.1:"),
        "{args}"
    );

    // A second run in the same directory reuses the registration.
    assert_eq!(
        spawn_and_wait_for_exit(&LocalProcesses::new(config())).await,
        "local-1"
    );
    assert_eq!(db::edges::list(&pool).await.unwrap().len(), 1);

    // Another directory, same database: the name is taken, so a suffix.
    let other = temp_dir("registry-other");
    let elsewhere = LocalProcesses::new(LocalConfig {
        dir: other.clone(),
        ..config()
    });
    let name = spawn_and_wait_for_exit(&elsewhere).await;
    assert!(
        name.starts_with("local-1-") && name.len() == "local-1-".len() + 4,
        "{name}"
    );
    let names: Vec<_> = db::edges::list(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

#[tokio::test]
async fn a_local_edge_follows_the_control_plane_and_becomes_ready() {
    let Some(bin) = edge_binary() else { return };
    let env = [
        ("DATABASE_URL", fresh_database().await),
        ("PORTICO_LISTEN", "127.0.0.1:0".to_string()),
        ("PORTICO_DB_MAX_CONNECTIONS", "5".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let settings = Settings::from_sources(env).unwrap();
    let options = Options::new(true, false);
    let running = app::start(settings, options).await.unwrap();
    let dir = temp_dir("connected");
    let local = LocalProcesses::new(quiet(LocalConfig {
        control_plane: Some(ControlPlaneLink {
            url: format!("http://{}", running.addr),
            pool: running.state.pool.clone(),
        }),
        ..LocalConfig::new(bin, &dir)
    }));
    let log = || std::fs::read_to_string(dir.join("edge-1.log")).unwrap_or_default();

    let m = local.spawn(None).await.unwrap();
    let probe = wait_until_ready(&local, &m.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(probe, Probe::Ready, "edge log:\n{}", log());
    // Replaced: an empty data dir, so the edge must fetch a full snapshot again.
    local.replace(&m.id).await.unwrap();
    let probe = wait_until_ready(&local, &m.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(probe, Probe::Ready, "edge log:\n{}", log());

    local.stop_all().await.unwrap();
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
