//! [`FlyMachines`]: edges as Fly Machines of one Fly app, driven through the
//! Machines REST API ([`api`]).
//!
//! A machine's edge name is its config metadata `portico_edge`, else its
//! machine name; its addresses are its `private_ip` (6PN) with the edge
//! ports this adapter is configured with (every machine runs the same edge
//! image, so they share ports). Fly states map to [`MachineState`]:
//! `started` runs; `created`, `starting` and `replacing` are on their way;
//! every other state (`stopping`, `stopped`, `suspended`, `destroying`,
//! `destroyed`, `failed`, …) does not run.
//!
//! `docs/infra.md` lists the API calls each method makes and the token
//! scope they need.

pub mod api;

use super::{Addresses, Infra, InfraError, Machine, MachineId, MachineState, Probe, probe};
use crate::secret::Secret;
use crate::settings::FlySettings;
use api::{Action, Api, FlyMachine, RetryPolicy};
use async_trait::async_trait;
use serde_json::Value;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Config metadata key that names the edge a machine runs.
pub const EDGE_METADATA_KEY: &str = "portico_edge";

/// How [`FlyMachines`] reaches Fly and its edges.
#[derive(Clone, Debug)]
pub struct FlyConfig {
    /// `https://api.machines.dev`, or `http://_api.internal:4280` inside Fly.
    pub api_url: String,
    pub token: Secret<String>,
    pub app: String,
    /// The ports every edge listens on (HTTP, HTTPS, admin) at its private IP.
    pub ports: EdgePorts,
    /// The machine config new machines get when scaling up; `None` copies
    /// the config of the app's newest machine.
    pub template: Option<Value>,
    /// The longest one API call may take (a `wait` call gets its own hold on top).
    pub request_timeout: Duration,
    /// How long restart, replace and scale wait for a machine to be `started`.
    pub start_timeout: Duration,
    /// How long a probe waits for an edge's admin listener.
    pub probe_timeout: Duration,
    pub retry: RetryPolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgePorts {
    pub http: u16,
    pub https: u16,
    pub admin: u16,
}

impl FlyConfig {
    /// Defaults around an app and a token: the public API, ports 80, 443
    /// and 9180, 10 s per call, 120 s to start, 3 retries.
    pub fn new(app: impl Into<String>, token: Secret<String>) -> Self {
        FlyConfig {
            api_url: "https://api.machines.dev".into(),
            token,
            app: app.into(),
            ports: EdgePorts {
                http: 80,
                https: 443,
                admin: 9180,
            },
            template: None,
            request_timeout: Duration::from_secs(10),
            start_timeout: Duration::from_secs(120),
            probe_timeout: Duration::from_secs(2),
            retry: RetryPolicy {
                retries: 3,
                base: Duration::from_millis(250),
                max_wait: Duration::from_secs(30),
            },
        }
    }

    /// From `PORTICO_FLY_*` (see `docs/configuration.md`).
    pub fn from_settings(s: &FlySettings) -> Self {
        FlyConfig {
            api_url: s.api_url.clone(),
            ports: s.edge_ports,
            template: s.machine_config.clone(),
            request_timeout: s.timeout,
            start_timeout: s.start_timeout,
            ..FlyConfig::new(s.app.clone(), s.token.clone())
        }
    }
}

/// Edges as Fly Machines; see the module docs.
pub struct FlyMachines {
    config: FlyConfig,
    api: Api,
}

impl std::fmt::Debug for FlyMachines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config's token is a `Secret`: it prints as `[redacted]`.
        f.debug_struct("FlyMachines")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl FlyMachines {
    pub fn new(config: FlyConfig) -> Result<Self, InfraError> {
        let client_error = |message: String| InfraError::Fly {
            action: "building the HTTP client".into(),
            status: None,
            message,
        };
        let tls = crate::webhooks::tls_config().map_err(|e| client_error(format!("{e:#}")))?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .connect_timeout(config.request_timeout)
            .user_agent(concat!("Portico/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| client_error(e.to_string()))?;
        let api = Api::new(
            client,
            &config.api_url,
            &config.app,
            config.token.clone(),
            config.request_timeout,
            config.retry.clone(),
        );
        Ok(FlyMachines { config, api })
    }

    /// `POST .../stop`: the machine stops and stays (its state `stopped`).
    pub async fn stop(&self, id: &MachineId) -> Result<(), InfraError> {
        self.api.action(id, Action::Stop).await
    }

    /// `POST .../start` of a stopped machine, then waits until it is `started`.
    pub async fn start(&self, id: &MachineId) -> Result<Machine, InfraError> {
        self.api.action(id, Action::Start).await?;
        self.wait_started(id).await
    }

    /// Fly's `wait` holds a request at most 60 s: ask again until
    /// `start_timeout` has passed, then name the state it was stuck in.
    async fn wait_started(&self, id: &MachineId) -> Result<Machine, InfraError> {
        let deadline = Instant::now() + self.config.start_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            if self.api.wait(id, "started", secs).await? {
                return self.api.get(id).await.map(|m| self.machine(m));
            }
            if Instant::now() >= deadline {
                let state = self.api.get(id).await.map(|m| m.state)?;
                return Err(InfraError::NotSettled {
                    id: id.clone(),
                    wanted: "started",
                    state,
                    waited: self.config.start_timeout,
                });
            }
        }
    }

    /// Creates a machine and waits for it; one that does not start is
    /// destroyed again (best effort) so that a retry does not pile them up.
    async fn create_started(
        &self,
        name: &str,
        region: &str,
        config: &Value,
    ) -> Result<Machine, InfraError> {
        let created = self.api.create(name, region, config).await?;
        let id = MachineId::new(created.id);
        tracing::info!(machine = %id, edge = name, region, "Fly machine created");
        match self.wait_started(&id).await {
            Ok(machine) => Ok(machine),
            Err(e) => {
                if let Err(cleanup) = self.api.destroy(&id).await {
                    tracing::warn!(machine = %id, error = %cleanup, "could not destroy a machine that did not start");
                }
                Err(e)
            }
        }
    }

    fn machine(&self, m: FlyMachine) -> Machine {
        let ip = m
            .private_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .unwrap_or_else(|| {
                tracing::warn!(machine = %m.id, "Fly machine without a usable private_ip");
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            });
        let ports = self.config.ports;
        Machine {
            name: edge_name(&m),
            region: m.region,
            state: machine_state(&m.state),
            addresses: Addresses {
                http: SocketAddr::new(ip, ports.http),
                https: SocketAddr::new(ip, ports.https),
                admin: SocketAddr::new(ip, ports.admin),
            },
            id: MachineId::new(m.id),
        }
    }

    /// The config a new machine in `region` gets: the template, else the
    /// newest machine's (without its volumes: a new edge starts empty).
    fn template(&self, machines: &[FlyMachine], region: &str) -> Result<Value, InfraError> {
        let config = match &self.config.template {
            Some(t) => t.clone(),
            None => newest_first(machines.iter().collect())
                .first()
                .map(|m| m.config.clone())
                .ok_or_else(|| InfraError::NoTemplate {
                    region: region.into(),
                })?,
        };
        Ok(fresh_config(config, None))
    }
}

#[async_trait]
impl Infra for FlyMachines {
    /// `GET /machines`, ordered by edge name, then machine id.
    async fn list(&self) -> Result<Vec<Machine>, InfraError> {
        let mut machines: Vec<Machine> = self
            .api
            .list()
            .await?
            .into_iter()
            .map(|m| self.machine(m))
            .collect();
        machines.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(machines)
    }

    /// `GET /machines/{id}`; when it is `started`, the edge's `/readyz`.
    async fn probe(&self, id: &MachineId) -> Result<Probe, InfraError> {
        let machine = self.machine(self.api.get(id).await?);
        match machine.state {
            MachineState::Running => {
                let admin = machine.addresses.admin;
                Ok(probe::http_probe(admin, "/readyz", self.config.probe_timeout).await)
            }
            MachineState::Starting(state) => Ok(Probe::Unreachable(format!(
                "machine {id} is not started yet (fly state: {state})"
            ))),
            MachineState::Exited(how) => Ok(Probe::Down(format!("machine {id}: {how}"))),
        }
    }

    /// `restart` of a started machine (`start` of a stopped one), then
    /// `wait` until it is `started`.
    async fn restart(&self, id: &MachineId) -> Result<Machine, InfraError> {
        let state = self.api.get(id).await?.state;
        match state.as_str() {
            "started" => self.api.action(id, Action::Restart).await?,
            "stopped" | "suspended" => self.api.action(id, Action::Start).await?,
            // Already on its way up: waiting is the restart.
            "created" | "starting" | "replacing" => {}
            _ => self.api.action(id, Action::Restart).await?,
        }
        tracing::info!(machine = %id, previous = %state, "Fly machine restarted");
        self.wait_started(id).await
    }

    /// Creates the new machine first (same name, region and config, no
    /// volumes), waits until it is `started`, then destroys the old one.
    /// In this order a failure (no capacity in the region, an image that
    /// does not boot) leaves the old machine where it was, and the region
    /// never has fewer machines than before.
    async fn replace(&self, id: &MachineId) -> Result<Machine, InfraError> {
        let old = self.api.get(id).await?;
        let config = fresh_config(old.config.clone(), Some(&edge_name(&old)));
        let new = self.create_started(&old.name, &old.region, &config).await?;
        self.api.destroy(id).await?;
        tracing::info!(old = %id, new = %new.id, edge = %new.name, "Fly machine replaced");
        Ok(new)
    }

    /// Creates machines from the template until `region` has `count`, or
    /// destroys the newest ones of the region until it has no more.
    async fn scale(&self, region: &str, count: usize) -> Result<Vec<Machine>, InfraError> {
        let all = self.api.list().await?;
        let mut names: Vec<String> = all.iter().map(edge_name).collect();
        let here: Vec<&FlyMachine> = all.iter().filter(|m| m.region == region).collect();
        for extra in newest_first(here.clone())
            .iter()
            .take(here.len().saturating_sub(count))
        {
            self.api.destroy(&MachineId::new(extra.id.clone())).await?;
            tracing::info!(machine = %extra.id, region, "Fly machine destroyed (scale down)");
        }
        if here.len() < count {
            let template = self.template(&all, region)?;
            for _ in here.len()..count {
                let name = free_name(&self.config.app, region, &names);
                let config = fresh_config(template.clone(), Some(&name));
                self.create_started(&name, region, &config).await?;
                names.push(name);
            }
        }
        let listed = self.list().await?;
        Ok(listed.into_iter().filter(|m| m.region == region).collect())
    }
}

/// Fly's state name → [`MachineState`] (see the module docs).
pub fn machine_state(fly: &str) -> MachineState {
    match fly {
        "started" => MachineState::Running,
        "created" | "starting" | "replacing" => MachineState::Starting(fly.into()),
        other => MachineState::Exited(format!("fly state: {other}")),
    }
}

/// Metadata `portico_edge`, else the machine's name, else its id.
fn edge_name(m: &FlyMachine) -> String {
    let from_metadata = m
        .config
        .pointer(&format!("/metadata/{EDGE_METADATA_KEY}"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match (from_metadata, m.name.is_empty()) {
        (Some(name), _) => name.to_string(),
        (None, false) => m.name.clone(),
        (None, true) => m.id.clone(),
    }
}

/// By `created_at` (RFC 3339), newest first; machines without one last.
fn newest_first(mut machines: Vec<&FlyMachine>) -> Vec<&FlyMachine> {
    let created = |m: &FlyMachine| {
        m.created_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    machines.sort_by(|a, b| (created(b), &b.id).cmp(&(created(a), &a.id)));
    machines
}

/// A copied config for a new machine: no `mounts` (a volume belongs to one
/// machine, and a new edge starts from a full snapshot anyway) and, when
/// given, the edge's name in its metadata.
fn fresh_config(mut config: Value, edge: Option<&str>) -> Value {
    if let Some(object) = config.as_object_mut() {
        object.remove("mounts");
        if let Some(edge) = edge {
            let metadata = object
                .entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(metadata) = metadata.as_object_mut() {
                metadata.insert(EDGE_METADATA_KEY.into(), Value::String(edge.into()));
            }
        }
    }
    config
}

/// `{app}-{region}-{n}` with the smallest `n` no machine of the app uses.
fn free_name(app: &str, region: &str, taken: &[String]) -> String {
    (1..)
        .map(|n| format!("{app}-{region}-{n}"))
        .find(|name| !taken.contains(name))
        .unwrap_or_else(|| format!("{app}-{region}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fly(id: &str, name: &str, created_at: &str, config: Value) -> FlyMachine {
        FlyMachine {
            id: id.into(),
            name: name.into(),
            state: "started".into(),
            region: "ams".into(),
            private_ip: Some("fdaa:0:1::3".into()),
            created_at: Some(created_at.into()),
            config,
        }
    }

    #[test]
    fn states_map_to_running_starting_or_not_running() {
        assert_eq!(machine_state("started"), MachineState::Running);
        for s in ["created", "starting", "replacing"] {
            assert_eq!(machine_state(s), MachineState::Starting(s.into()));
        }
        for s in [
            "stopping",
            "stopped",
            "suspended",
            "destroying",
            "destroyed",
            "failed",
            "new-one",
        ] {
            assert_eq!(
                machine_state(s),
                MachineState::Exited(format!("fly state: {s}"))
            );
        }
    }

    #[test]
    fn edge_names_come_from_metadata_then_name_then_id() {
        let meta = json!({"metadata": {"portico_edge": "edge-ams-1"}});
        assert_eq!(
            edge_name(&fly("m1", "x", "2026-01-01T00:00:00Z", meta)),
            "edge-ams-1"
        );
        assert_eq!(
            edge_name(&fly("m1", "x", "2026-01-01T00:00:00Z", json!({}))),
            "x"
        );
        assert_eq!(
            edge_name(&fly("m1", "", "2026-01-01T00:00:00Z", json!({}))),
            "m1"
        );
    }

    #[test]
    fn newest_first_orders_by_creation_time() {
        let a = fly("a", "", "2026-01-01T00:00:02Z", json!({}));
        let b = fly("b", "", "2026-01-01T00:00:10Z", json!({}));
        let c = fly("c", "", "2026-01-01T00:00:01.5+00:00", json!({}));
        let order: Vec<&str> = newest_first(vec![&a, &b, &c])
            .iter()
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(order, ["b", "a", "c"]);
    }

    #[test]
    fn a_fresh_config_has_no_volumes_and_names_its_edge() {
        let config = json!({"image": "i", "mounts": [{"volume": "v"}], "metadata": {"k": "v"}});
        let fresh = fresh_config(config, Some("edge-1"));
        assert_eq!(
            fresh,
            json!({"image": "i", "metadata": {"k": "v", "portico_edge": "edge-1"}})
        );
        let taken = vec!["app-ams-1".to_string(), "app-ams-3".to_string()];
        assert_eq!(free_name("app", "ams", &taken), "app-ams-2");
    }
}
