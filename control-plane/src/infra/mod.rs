//! Infra adapters: the machines that run edge proxies, behind one trait.
//!
//! Self-repair ladders, dev mode and the end-to-end tests call [`Infra`] —
//! list, probe, restart, replace, scale — and never a concrete adapter, so the
//! same code drives local child processes ([`local::LocalProcesses`]) and
//! Fly Machines ([`fly::FlyMachines`], over the Machines REST API). A probe
//! asks the edge's admin listener whether it serves ([`probe::http_probe`]);
//! adapters add what they know about the process or machine underneath.
//! `docs/infra.md` says which calls each adapter makes.

pub mod fly;
pub mod local;
pub mod probe;
mod registration;

use crate::api::error::ApiError;
use async_trait::async_trait;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What self-repair may do to the machines that run edges.
#[async_trait]
pub trait Infra: Send + Sync {
    /// Every machine this adapter manages, in a stable order.
    async fn list(&self) -> Result<Vec<Machine>, InfraError>;

    /// Whether the machine's edge serves: a short HTTP GET of its admin
    /// `/readyz`, plus what the adapter knows (a process that exited is
    /// [`Probe::Down`] without asking).
    async fn probe(&self, id: &MachineId) -> Result<Probe, InfraError>;

    /// Stops the edge and starts it again on the same machine: same
    /// addresses, same data (its snapshot cache survives).
    async fn restart(&self, id: &MachineId) -> Result<Machine, InfraError>;

    /// Puts a fresh machine in its place: same edge identity and addresses,
    /// empty data (the edge starts from a full snapshot). Returns the machine
    /// that took its place; its id may differ from `id`.
    async fn replace(&self, id: &MachineId) -> Result<Machine, InfraError>;

    /// Starts or stops machines in `region` until `count` of them exist;
    /// returns the machines of that region afterwards.
    async fn scale(&self, region: &str, count: usize) -> Result<Vec<Machine>, InfraError>;
}

/// A machine's id as its adapter names it (`local-1`, a Fly machine id).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MachineId(String);

impl MachineId {
    pub fn new(id: impl Into<String>) -> Self {
        MachineId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One machine running (or meant to run) one edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub id: MachineId,
    /// The edge's name in the control plane's registry (`GET /v1/ops/edges`).
    pub name: String,
    pub region: String,
    pub state: MachineState,
    pub addresses: Addresses,
}

/// Where a machine's edge listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addresses {
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub admin: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineState {
    /// The process (or machine) runs; whether it serves is what [`Infra::probe`] says.
    Running,
    /// On its way to running (Fly: `created`, `starting`, `replacing`):
    /// waiting may be all it needs. The adapter's own state name.
    Starting(String),
    /// It does not run: it ended by itself or was stopped; how
    /// (`exit status: 1`, `signal: 9`, `fly state: stopped`).
    Exited(String),
}

/// The answer to "does this edge serve?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `/readyz` answered 200: the edge has a config and routes traffic.
    Ready,
    /// The edge answers but is not ready (e.g. no config from the control
    /// plane yet): the status and the first line of the body.
    NotReady(String),
    /// The machine runs but its admin listener did not answer in time.
    Unreachable(String),
    /// The machine does not run (the process exited, the machine stopped).
    Down(String),
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Ready => f.write_str("ready"),
            Probe::NotReady(why) => write!(f, "not ready: {why}"),
            Probe::Unreachable(why) => write!(f, "unreachable: {why}"),
            Probe::Down(why) => write!(f, "down: {why}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error("no machine {0}")]
    UnknownMachine(MachineId),
    #[error("region {requested:?} is not run by this adapter (it runs {runs:?})")]
    UnknownRegion { requested: String, runs: String },
    #[error(
        "the edge binary {} is missing: run `cargo build -p portico-edge` or set PORTICO_EDGE_BIN",
        path.display()
    )]
    EdgeBinaryMissing { path: PathBuf },
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("registering edge {name:?} with the control plane: {source}")]
    Register {
        name: String,
        #[source]
        source: ApiError,
    },
    #[error("reading the edge registry: {0}")]
    Db(#[from] sqlx::Error),
    #[error("machine {id} did not exit within {waited:?}, even after SIGKILL")]
    Stuck { id: MachineId, waited: Duration },
    /// The Fly Machines API refused a call or did not answer. `status` is
    /// `None` when no HTTP answer came (timeout, connection refused).
    #[error("Fly Machines API: {action}: {}{message}", status.map(|s| format!("{s} ")).unwrap_or_default())]
    Fly {
        action: String,
        status: Option<u16>,
        message: String,
    },
    #[error("machine {id} did not reach `{wanted}` within {waited:?} (last state: {state})")]
    NotSettled {
        id: MachineId,
        wanted: &'static str,
        state: String,
        waited: Duration,
    },
    #[error(
        "no machine config to create edges in region {region:?} from: set PORTICO_FLY_MACHINE_CONFIG or keep one machine in the app"
    )]
    NoTemplate { region: String },
}

impl InfraError {
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> InfraError {
        let action = action.into();
        move |source| InfraError::Io { action, source }
    }
}

/// Probes `id` until it is [`Probe::Ready`], it is [`Probe::Down`] (returned
/// at once: waiting will not help), or `within` has passed (the last probe
/// is returned).
pub async fn wait_until_ready(
    infra: &dyn Infra,
    id: &MachineId,
    within: Duration,
) -> Result<Probe, InfraError> {
    let deadline = Instant::now() + within;
    loop {
        let probe = infra.probe(id).await?;
        if matches!(probe, Probe::Ready | Probe::Down(_)) || Instant::now() >= deadline {
            return Ok(probe);
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // allow-sleep: polling with a deadline
    }
}
