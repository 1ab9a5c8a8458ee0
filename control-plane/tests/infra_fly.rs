//! `FlyMachines` against a fake Fly Machines API (`support/fake_fly.rs`) on
//! loopback: every `Infra` method, stop and start, and the failures —
//! a wrong token, rate limiting, persistent 5xx, a slow API, a machine that
//! never starts — each a clear error that names the machine and never the
//! token. The machines' "edges" are one tiny `/readyz` server.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/fake_fly.rs"]
mod fake_fly;

use fake_fly::{FakeFly, Fault, TOKEN};
use portico_control_plane::infra::fly::{EdgePorts, FlyConfig, FlyMachines};
use portico_control_plane::infra::{Infra, InfraError, MachineId, MachineState, Probe};
use portico_control_plane::secret::Secret;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const APP: &str = "portico-edges";

struct Rig {
    fake: FakeFly,
    /// Where every machine's edge admin listener "is" (127.0.0.1 + this port).
    admin: SocketAddr,
    _readyz: tokio::task::JoinHandle<()>,
}

impl Rig {
    async fn new() -> Rig {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = listener.local_addr().unwrap();
        let router =
            axum::Router::new().route("/readyz", axum::routing::get(|| async { "ready\n" }));
        let readyz = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Rig {
            fake: FakeFly::start(APP, "127.0.0.1").await,
            admin,
            _readyz: readyz,
        }
    }

    fn config(&self) -> FlyConfig {
        let mut config = FlyConfig::new(APP, Secret::new(TOKEN.to_string()));
        config.api_url = self.fake.url.clone();
        config.ports = EdgePorts {
            http: 8080,
            https: 8443,
            admin: self.admin.port(),
        };
        config.request_timeout = Duration::from_secs(5);
        config.start_timeout = Duration::from_secs(10);
        config.retry.base = Duration::from_millis(10);
        config
    }

    fn fly(&self) -> FlyMachines {
        FlyMachines::new(self.config()).unwrap()
    }

    fn count(&self, request: &str) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.starts_with(request))
            .count()
    }
}

fn edge_config(edge: &str) -> Value {
    json!({
        "image": "registry.fly.io/portico-edge:latest",
        "env": {"PORTICO_EDGE_ADMIN": "[::]:9180"},
        "services": [{"internal_port": 80, "protocol": "tcp", "ports": [{"port": 80}]}],
        "metadata": {"portico_edge": edge},
    })
}

fn id(s: &str) -> MachineId {
    MachineId::new(s)
}

fn path(rest: &str) -> String {
    format!("/v1/apps/{APP}/machines{rest}")
}

#[tokio::test]
async fn fly_list_maps_names_regions_states_and_addresses() {
    let rig = Rig::new().await;
    let a = rig
        .fake
        .add_started("m-a", "ams", edge_config("edge-ams-1"));
    let b = rig
        .fake
        .add_started("edge-ord-1", "ord", json!({"image": "x"}));
    rig.fake.set_state(&b, "stopped");

    let listed = rig.fly().list().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, id(&a));
    assert_eq!(listed[0].name, "edge-ams-1", "metadata names the edge");
    assert_eq!(listed[0].region, "ams");
    assert_eq!(listed[0].state, MachineState::Running);
    assert_eq!(listed[0].addresses.http, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(listed[0].addresses.https, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(listed[0].addresses.admin, rig.admin);
    assert_eq!(listed[1].name, "edge-ord-1", "else the machine name");
    assert_eq!(
        listed[1].state,
        MachineState::Exited("fly state: stopped".into())
    );
    assert_eq!(rig.fake.requests(), [format!("GET {}", path(""))]);
}

#[tokio::test]
async fn fly_probe_asks_the_edge_only_when_the_machine_is_started() {
    let rig = Rig::new().await;
    let fly = rig.fly();
    let m = rig.fake.add_started("m", "ams", edge_config("edge-ams-1"));
    assert_eq!(fly.probe(&id(&m)).await.unwrap(), Probe::Ready);

    rig.fake.set_state(&m, "starting");
    let probe = fly.probe(&id(&m)).await.unwrap();
    assert!(
        matches!(&probe, Probe::Unreachable(why) if why.contains("starting")),
        "{probe:?}"
    );

    rig.fake.set_state(&m, "stopped");
    let probe = fly.probe(&id(&m)).await.unwrap();
    assert!(
        matches!(&probe, Probe::Down(why) if why.contains(&m) && why.contains("stopped")),
        "{probe:?}"
    );

    // Started, but nothing listens on its admin port.
    rig.fake.set_state(&m, "started");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = rig.config();
    config.ports.admin = closed.port();
    let probe = FlyMachines::new(config)
        .unwrap()
        .probe(&id(&m))
        .await
        .unwrap();
    assert!(matches!(probe, Probe::Unreachable(_)), "{probe:?}");

    let e = fly.probe(&id("nope")).await.unwrap_err();
    assert!(
        matches!(&e, InfraError::UnknownMachine(m) if m.as_str() == "nope"),
        "{e}"
    );
}

#[tokio::test]
async fn fly_restart_waits_until_started_and_starts_a_stopped_machine() {
    let rig = Rig::new().await;
    let fly = rig.fly();
    let m = rig.fake.add_started("m", "ams", edge_config("edge-ams-1"));
    let restarted = fly.restart(&id(&m)).await.unwrap();
    assert_eq!(
        (restarted.id.as_str(), &restarted.state),
        (m.as_str(), &MachineState::Running)
    );
    assert_eq!(
        rig.count(&format!("POST {}", path(&format!("/{m}/restart")))),
        1
    );
    assert_eq!(
        rig.count(&format!(
            "GET {}",
            path(&format!("/{m}/wait?state=started&timeout="))
        )),
        1,
        "{:?}",
        rig.fake.requests()
    );

    rig.fake.set_state(&m, "stopped");
    let restarted = fly.restart(&id(&m)).await.unwrap();
    assert_eq!(restarted.state, MachineState::Running);
    assert_eq!(
        rig.count(&format!("POST {}", path(&format!("/{m}/start")))),
        1
    );

    let e = fly.restart(&id("nope")).await.unwrap_err();
    assert!(matches!(e, InfraError::UnknownMachine(_)), "{e}");
}

#[tokio::test]
async fn fly_stop_then_start() {
    let rig = Rig::new().await;
    let fly = rig.fly();
    let m = rig.fake.add_started("m", "ams", edge_config("edge-ams-1"));
    fly.stop(&id(&m)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = fly.list().await.unwrap()[0].state.clone();
        if state == MachineState::Exited("fly state: stopped".into()) {
            break;
        }
        assert_eq!(state, MachineState::Exited("fly state: stopping".into()));
        assert!(Instant::now() < deadline, "never stopped");
        tokio::time::sleep(Duration::from_millis(20)).await; // allow-sleep: polling with a deadline
    }
    let started = fly.start(&id(&m)).await.unwrap();
    assert_eq!(started.state, MachineState::Running);
    // Starting a started machine is Fly's 412, passed on with its message.
    let e = fly.start(&id(&m)).await.unwrap_err().to_string();
    assert!(
        e.contains(&m) && e.contains("412") && e.contains("current state"),
        "{e}"
    );
}

#[tokio::test]
async fn fly_replace_creates_the_new_machine_before_destroying_the_old() {
    let rig = Rig::new().await;
    let mut config = edge_config("edge-ams-1");
    config["mounts"] = json!([{"volume": "vol_1", "path": "/data"}]);
    let old = rig.fake.add_started("edge-ams-1", "ams", config.clone());
    let other = rig
        .fake
        .add_started("edge-ord-1", "ord", edge_config("edge-ord-1"));

    let new = rig.fly().replace(&id(&old)).await.unwrap();
    assert_ne!(new.id.as_str(), old);
    assert_eq!(
        (new.name.as_str(), new.region.as_str()),
        ("edge-ams-1", "ams")
    );
    assert_eq!(new.state, MachineState::Running);
    assert_eq!(
        rig.fake.ids(),
        [other, new.id.to_string()],
        "the old one is gone"
    );
    config.as_object_mut().unwrap().remove("mounts");
    assert_eq!(
        rig.fake.config(new.id.as_str()).unwrap(),
        config,
        "same config, no volume"
    );

    let requests = rig.fake.requests();
    let at = |line: &str| requests.iter().position(|r| r == line).unwrap();
    let created = at(&format!("POST {}", path("")));
    let destroyed = at(&format!("DELETE {}", path(&format!("/{old}?force=true"))));
    assert!(created < destroyed, "{requests:?}");
}

#[tokio::test]
async fn fly_replace_keeps_the_old_machine_when_the_new_one_never_starts() {
    let rig = Rig::new().await;
    let old = rig
        .fake
        .add_started("edge-ams-1", "ams", edge_config("edge-ams-1"));
    rig.fake.stick_new_machines();
    let mut config = rig.config();
    config.start_timeout = Duration::from_secs(1);
    let e = FlyMachines::new(config)
        .unwrap()
        .replace(&id(&old))
        .await
        .unwrap_err();
    let InfraError::NotSettled {
        id: stuck, state, ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_ne!(stuck.as_str(), old);
    assert_eq!(state, "created");
    assert!(e.to_string().contains(stuck.as_str()), "{e}");
    assert_eq!(
        rig.fake.ids(),
        [old],
        "old kept, the stuck new one destroyed"
    );
}

#[tokio::test]
async fn fly_scale_creates_from_the_template_and_destroys_the_newest() {
    let rig = Rig::new().await;
    let first = rig.fake.add_started(
        "portico-edges-ams-1",
        "ams",
        edge_config("portico-edges-ams-1"),
    );
    let ord = rig
        .fake
        .add_started("edge-ord-1", "ord", edge_config("edge-ord-1"));
    let mut config = rig.config();
    config.template = Some(json!({"image": "registry.fly.io/portico-edge:v2"}));
    let fly = FlyMachines::new(config).unwrap();

    let up = fly.scale("ams", 3).await.unwrap();
    let names: Vec<&str> = up.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "portico-edges-ams-1",
            "portico-edges-ams-2",
            "portico-edges-ams-3"
        ]
    );
    assert!(
        up.iter()
            .all(|m| m.state == MachineState::Running && m.region == "ams")
    );
    let created = &up[2];
    assert_eq!(
        rig.fake.config(created.id.as_str()).unwrap(),
        json!({"image": "registry.fly.io/portico-edge:v2", "metadata": {"portico_edge": "portico-edges-ams-3"}})
    );

    let down = fly.scale("ams", 1).await.unwrap();
    assert_eq!(down.len(), 1);
    assert_eq!(down[0].id.as_str(), first, "the newest went first");
    assert_eq!(rig.fake.ids(), [first.clone(), ord.clone()]);

    // No template: the newest machine's config is copied.
    let copied = rig.fly().scale("fra", 1).await.unwrap();
    let config = rig.fake.config(copied[0].id.as_str()).unwrap();
    assert_eq!(config["image"], "registry.fly.io/portico-edge:latest");
    assert_eq!(config["metadata"]["portico_edge"], "portico-edges-fra-1");

    let empty = Rig::new().await;
    let e = empty.fly().scale("ams", 1).await.unwrap_err();
    assert!(matches!(e, InfraError::NoTemplate { .. }), "{e}");
}

#[tokio::test]
async fn fly_wrong_token_is_a_clear_error_that_does_not_print_it() {
    let rig = Rig::new().await;
    let mut config = rig.config();
    config.token = Secret::new("wrong-Fly-token-value".into());
    let fly = FlyMachines::new(config).unwrap();
    let e = fly.list().await.unwrap_err();
    assert!(
        matches!(
            e,
            InfraError::Fly {
                status: Some(401),
                ..
            }
        ),
        "{e}"
    );
    let message = e.to_string();
    assert!(
        message.contains("authenticated") && message.contains("PORTICO_FLY_API_TOKEN"),
        "{message}"
    );
    assert!(message.contains(APP), "{message}");
    for printed in [message, format!("{e:?}"), format!("{fly:?}")] {
        assert!(!printed.contains("wrong-Fly-token-value"), "{printed}");
    }
    assert_eq!(rig.fake.requests().len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn fly_429_is_retried_after_retry_after() {
    let rig = Rig::new().await;
    rig.fake.add_started("m", "ams", edge_config("edge-ams-1"));
    rig.fake.fail_next(
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
        1,
    );
    let started = Instant::now();
    assert_eq!(rig.fly().list().await.unwrap().len(), 1);
    assert_eq!(rig.fake.requests().len(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After was honoured"
    );
}

#[tokio::test]
async fn fly_persistent_500_fails_after_bounded_retries_and_create_is_not_repeated() {
    let rig = Rig::new().await;
    let m = rig.fake.add_started("m", "ams", edge_config("edge-ams-1"));
    rig.fake.fail_always(Some(Fault::ServerError));
    let fly = rig.fly();
    let e = fly.restart(&id(&m)).await.unwrap_err();
    assert!(
        matches!(
            e,
            InfraError::Fly {
                status: Some(500),
                ..
            }
        ),
        "{e}"
    );
    let message = e.to_string();
    assert!(
        message.contains(&m) && message.contains("internal server error"),
        "{message}"
    );
    assert_eq!(
        rig.fake.requests().len(),
        4,
        "one attempt and three retries"
    );

    // A create that failed may have made a machine: it is not sent twice.
    rig.fake.fail_always(None);
    rig.fake
        .fail_next_on(&format!("POST {}", path("")), Fault::ServerError);
    let e = fly.scale("ams", 2).await.unwrap_err();
    assert!(
        matches!(
            e,
            InfraError::Fly {
                status: Some(500),
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(rig.count(&format!("POST {}", path(""))), 1);
}

#[tokio::test]
async fn fly_a_slow_api_times_out_with_an_error_naming_the_machine() {
    let rig = Rig::new().await;
    let m = rig.fake.add_started("m", "ams", edge_config("edge-ams-1"));
    let mut config = rig.config();
    config.request_timeout = Duration::from_millis(300);
    rig.fake.fail_next(Fault::Slow(Duration::from_secs(5)), 1);
    let e = FlyMachines::new(config)
        .unwrap()
        .probe(&id(&m))
        .await
        .unwrap_err();
    assert!(matches!(e, InfraError::Fly { status: None, .. }), "{e}");
    let message = e.to_string();
    assert!(
        message.contains(&m) && message.contains("no answer within 300 ms"),
        "{message}"
    );
}

#[tokio::test]
async fn fly_a_machine_that_never_starts_is_named() {
    let rig = Rig::new().await;
    let m = rig.fake.add_started("m", "ams", edge_config("edge-ams-1"));
    rig.fake.stick(&m);
    let mut config = rig.config();
    config.start_timeout = Duration::from_secs(1);
    let e = FlyMachines::new(config)
        .unwrap()
        .restart(&id(&m))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, InfraError::NotSettled { id, state, .. } if id.as_str() == m && state == "starting"),
        "{e}"
    );
    assert!(e.to_string().contains(&m), "{e}");
    assert_eq!(rig.fake.state(&m).as_deref(), Some("starting"));
}

#[tokio::test]
async fn fly_the_token_never_appears_in_debug_output_or_errors() {
    let rig = Rig::new().await;
    let config = rig.config();
    let fly = FlyMachines::new(config.clone()).unwrap();
    let mut printed = vec![format!("{config:?}"), format!("{fly:?}")];
    rig.fake.fail_always(Some(Fault::ServerError));
    let e = fly.list().await.unwrap_err();
    printed.extend([e.to_string(), format!("{e:?}")]);
    rig.fake.fail_always(None);
    let e = fly.restart(&id("nope")).await.unwrap_err();
    printed.extend([e.to_string(), format!("{e:?}")]);
    for p in printed {
        assert!(!p.contains(TOKEN), "{p}");
    }
}
