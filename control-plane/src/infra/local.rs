//! [`LocalProcesses`]: edges as `portico-edge` child processes on this host,
//! for dev mode and the end-to-end tests.
//!
//! Machine `local-N` is slot N of one `LocalProcesses`: a data dir
//! `DIR/edge-N/`, a log `DIR/edge-N.log` (stdout and stderr; truncated when
//! the slot starts, appended to on restart and replace) and, with a control
//! plane, a token `DIR/edge-N.token` (see `registration`). The edge gets the
//! control plane's URL, its token and its name through `PORTICO_EDGE_*`
//! environment variables (never argv, which `ps` shows); inherited
//! `PORTICO_EDGE_*` variables are removed.
//!
//! Stopping sends SIGINT (pingora's fast shutdown) or SIGTERM (its graceful
//! drain), waits, then kills. Children are killed when their `Child` is
//! dropped and, on Linux with `setpriv` installed, get a parent-death signal,
//! so that not even a SIGKILL of this process leaves an edge running. (The
//! kernel sends it when the *thread* that spawned the child ends; tokio's
//! worker threads live as long as the runtime. Do not spawn from
//! `spawn_blocking`.)

use super::registration::{self, Identity};
use super::{Addresses, Infra, InfraError, Machine, MachineId, MachineState, Probe, probe};
use async_trait::async_trait;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// How [`LocalProcesses`] runs its edges.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// The `portico-edge` binary (see [`find_edge_binary`]).
    pub edge_bin: PathBuf,
    /// Where data dirs, logs and tokens go (created if missing).
    pub dir: PathBuf,
    /// The region every machine is in and the only one `scale` accepts.
    pub region: String,
    /// Edge names are `{name_prefix}-{N}`.
    pub name_prefix: String,
    /// Register the edges there and point them at it; `None` runs them
    /// standalone (they serve, but are not ready: they have no config).
    pub control_plane: Option<ControlPlaneLink>,
    pub stop: StopMode,
    /// How long a stop waits for the edge to exit before killing it.
    pub stop_timeout: Duration,
    /// How long a probe waits for the admin listener.
    pub probe_timeout: Duration,
    /// Extra environment for every edge (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// Use `setpriv --pdeathsig` when available (Linux).
    pub parent_death_signal: bool,
}

/// The control plane local edges register with and stream their config from.
#[derive(Clone, Debug)]
pub struct ControlPlaneLink {
    /// Base URL the edges connect to, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Its database, where the edges are registered.
    pub pool: PgPool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// SIGINT: pingora exits at once.
    Fast,
    /// SIGTERM: pingora keeps serving for its grace period (5 s), then drains.
    Graceful,
}

impl StopMode {
    fn signal(self) -> &'static str {
        match self {
            StopMode::Fast => "INT",
            StopMode::Graceful => "TERM",
        }
    }
}

impl LocalConfig {
    /// Standalone edges in `dir`, region `local`, fast stops.
    pub fn new(edge_bin: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Self {
        LocalConfig {
            edge_bin: edge_bin.into(),
            dir: dir.into(),
            region: "local".into(),
            name_prefix: "local".into(),
            control_plane: None,
            stop: StopMode::Fast,
            stop_timeout: Duration::from_secs(20),
            probe_timeout: Duration::from_secs(2),
            env: Vec::new(),
            parent_death_signal: true,
        }
    }
}

/// `PORTICO_EDGE_BIN` if set, else `portico-edge` next to the running
/// executable (both binaries build into the same `target/` directory).
pub fn find_edge_binary() -> Result<PathBuf, InfraError> {
    let path = match std::env::var_os("PORTICO_EDGE_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe()
                .map_err(InfraError::io("finding the running executable"))?;
            let name = format!("portico-edge{}", std::env::consts::EXE_SUFFIX);
            exe.parent()
                .map_or_else(|| PathBuf::from(&name), |d| d.join(&name))
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(InfraError::EdgeBinaryMissing { path })
    }
}

/// Edges as child processes; see the module docs.
pub struct LocalProcesses {
    config: LocalConfig,
    setpriv: Option<PathBuf>,
    state: Mutex<State>,
}

struct State {
    /// Ordered by `n`.
    slots: Vec<Slot>,
    next: u32,
}

struct Slot {
    n: u32,
    id: MachineId,
    name: String,
    identity: Option<Identity>,
    addresses: Addresses,
    child: Child,
}

impl LocalProcesses {
    pub fn new(config: LocalConfig) -> Self {
        let setpriv = config.parent_death_signal.then(find_setpriv).flatten();
        LocalProcesses {
            config,
            setpriv,
            state: Mutex::new(State {
                slots: Vec::new(),
                next: 1,
            }),
        }
    }

    /// Starts a new edge on `addresses` (a port 0 is replaced by a free
    /// one; `None` is three free ports on 127.0.0.1). Returns at once; use
    /// [`super::wait_until_ready`] to wait for it.
    pub async fn spawn(&self, addresses: Option<Addresses>) -> Result<Machine, InfraError> {
        let mut state = self.state.lock().await;
        self.spawn_locked(&mut state, addresses).await
    }

    /// Stops one machine and forgets it (its data dir and log stay).
    pub async fn stop(&self, id: &MachineId) -> Result<(), InfraError> {
        let mut slot = {
            let mut state = self.state.lock().await;
            let at = position(&state, id)?;
            state.slots.remove(at)
        };
        self.stop_child(&mut slot).await
    }

    /// Stops every machine (in parallel); the first error, after trying all.
    pub async fn stop_all(&self) -> Result<(), InfraError> {
        let mut slots = std::mem::take(&mut self.state.lock().await.slots);
        let results = futures::future::join_all(slots.iter_mut().map(|s| self.stop_child(s))).await;
        results.into_iter().collect()
    }

    /// The OS process id of a running machine (`None` once it exited).
    pub async fn pid(&self, id: &MachineId) -> Result<Option<u32>, InfraError> {
        let state = self.state.lock().await;
        Ok(state.slots[position(&state, id)?].child.id())
    }

    /// Where the machine's stdout and stderr go.
    pub async fn log_path(&self, id: &MachineId) -> Result<PathBuf, InfraError> {
        let state = self.state.lock().await;
        Ok(self.log_file(state.slots[position(&state, id)?].n))
    }

    async fn spawn_locked(
        &self,
        state: &mut State,
        addresses: Option<Addresses>,
    ) -> Result<Machine, InfraError> {
        let n = state.next;
        let addresses = resolve(addresses)?;
        let data_dir = self.data_dir(n);
        std::fs::create_dir_all(&data_dir)
            .map_err(InfraError::io(format!("creating {}", data_dir.display())))?;
        let base = format!("{}-{n}", self.config.name_prefix);
        let identity = match &self.config.control_plane {
            Some(link) => Some(
                registration::register(&link.pool, &self.token_file(n), &base, &self.config.region)
                    .await?,
            ),
            None => None,
        };
        let name = identity.as_ref().map_or(base, |i| i.name.clone());
        let child = self.start(n, &name, identity.as_ref(), &addresses, Log::Fresh)?;
        let mut slot = Slot {
            n,
            id: MachineId::new(format!("{}-{n}", self.config.name_prefix)),
            name,
            identity,
            addresses,
            child,
        };
        let machine = self.machine(&mut slot);
        state.next += 1;
        state.slots.push(slot);
        Ok(machine)
    }

    /// Starts the process for slot `n`; the caller keeps the [`Child`].
    fn start(
        &self,
        n: u32,
        name: &str,
        identity: Option<&Identity>,
        addresses: &Addresses,
        log: Log,
    ) -> Result<Child, InfraError> {
        let bin = &self.config.edge_bin;
        if !bin.is_file() {
            return Err(InfraError::EdgeBinaryMissing { path: bin.clone() });
        }
        let mut cmd = match &self.setpriv {
            Some(setpriv) => {
                let mut cmd = Command::new(setpriv);
                cmd.arg("--pdeathsig")
                    .arg(self.config.stop.signal())
                    .arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.arg("--data-dir")
            .arg(self.data_dir(n))
            .arg("--http")
            .arg(addresses.http.to_string())
            .arg("--https")
            .arg(addresses.https.to_string())
            .arg("--admin")
            .arg(addresses.admin.to_string());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PORTICO_EDGE_") {
                cmd.env_remove(key);
            }
        }
        if let (Some(link), Some(identity)) = (&self.config.control_plane, identity) {
            cmd.env("PORTICO_EDGE_CONTROL_PLANE", &link.url)
                .env("PORTICO_EDGE_TOKEN", identity.token.expose())
                .env("PORTICO_EDGE_NAME", name);
        }
        cmd.envs(self.config.env.iter().map(|(k, v)| (k, v)));
        let path = self.log_file(n);
        let out = open_log(&path, log, name)?;
        let err = out
            .try_clone()
            .map_err(InfraError::io(format!("opening {}", path.display())))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(InfraError::io(format!("starting {}", bin.display())))?;
        tracing::info!(edge = name, pid = child.id(), http = %addresses.http, admin = %addresses.admin,
            log = %path.display(), "edge process started");
        Ok(child)
    }

    /// Signal, wait `stop_timeout`, kill, wait a little more.
    async fn stop_child(&self, slot: &mut Slot) -> Result<(), InfraError> {
        let waiting = || InfraError::io(format!("waiting for {}", slot.id));
        if slot.child.try_wait().map_err(waiting())?.is_some() {
            return Ok(());
        }
        if let Some(pid) = slot.child.id() {
            send_signal(pid, self.config.stop.signal()).await;
        }
        let waited = tokio::time::timeout(self.config.stop_timeout, slot.child.wait()).await;
        let status = match waited {
            Ok(status) => status.map_err(waiting())?,
            Err(_) => {
                tracing::warn!(edge = %slot.name, "edge did not stop in time; killing it");
                let _ = slot.child.start_kill();
                let grace = Duration::from_secs(5);
                match tokio::time::timeout(grace, slot.child.wait()).await {
                    Ok(status) => status.map_err(waiting())?,
                    Err(_) => {
                        return Err(InfraError::Stuck {
                            id: slot.id.clone(),
                            waited: self.config.stop_timeout + grace,
                        });
                    }
                }
            }
        };
        tracing::info!(edge = %slot.name, %status, "edge process stopped");
        Ok(())
    }

    fn machine(&self, slot: &mut Slot) -> Machine {
        let state = match slot.child.try_wait() {
            Ok(None) => MachineState::Running,
            Ok(Some(status)) => MachineState::Exited(status.to_string()),
            Err(e) => MachineState::Exited(format!("unknown ({e})")),
        };
        Machine {
            id: slot.id.clone(),
            name: slot.name.clone(),
            region: self.config.region.clone(),
            state,
            addresses: slot.addresses,
        }
    }

    fn data_dir(&self, n: u32) -> PathBuf {
        self.config.dir.join(format!("edge-{n}"))
    }

    fn log_file(&self, n: u32) -> PathBuf {
        self.config.dir.join(format!("edge-{n}.log"))
    }

    fn token_file(&self, n: u32) -> PathBuf {
        self.config.dir.join(format!("edge-{n}.token"))
    }
}

#[async_trait]
impl Infra for LocalProcesses {
    async fn list(&self) -> Result<Vec<Machine>, InfraError> {
        let mut state = self.state.lock().await;
        Ok(state.slots.iter_mut().map(|s| self.machine(s)).collect())
    }

    async fn probe(&self, id: &MachineId) -> Result<Probe, InfraError> {
        let admin = {
            let mut state = self.state.lock().await;
            let at = position(&state, id)?;
            let slot = &mut state.slots[at];
            if let MachineState::Exited(how) = self.machine(slot).state {
                let log = self.log_file(slot.n);
                return Ok(Probe::Down(format!(
                    "the process exited ({how}); see {}",
                    log.display()
                )));
            }
            slot.addresses.admin
        };
        Ok(probe::http_probe(admin, "/readyz", self.config.probe_timeout).await)
    }

    async fn restart(&self, id: &MachineId) -> Result<Machine, InfraError> {
        let mut state = self.state.lock().await;
        let at = position(&state, id)?;
        let slot = &mut state.slots[at];
        self.stop_child(slot).await?;
        slot.child = self.start(
            slot.n,
            &slot.name,
            slot.identity.as_ref(),
            &slot.addresses,
            Log::Append("restart"),
        )?;
        Ok(self.machine(slot))
    }

    async fn replace(&self, id: &MachineId) -> Result<Machine, InfraError> {
        let mut state = self.state.lock().await;
        let at = position(&state, id)?;
        let slot = &mut state.slots[at];
        self.stop_child(slot).await?;
        let dir = self.data_dir(slot.n);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(InfraError::io(format!("removing {}", dir.display()))(e)),
        }
        std::fs::create_dir_all(&dir)
            .map_err(InfraError::io(format!("creating {}", dir.display())))?;
        slot.child = self.start(
            slot.n,
            &slot.name,
            slot.identity.as_ref(),
            &slot.addresses,
            Log::Append("replace (empty data dir)"),
        )?;
        Ok(self.machine(slot))
    }

    async fn scale(&self, region: &str, count: usize) -> Result<Vec<Machine>, InfraError> {
        if region != self.config.region {
            return Err(InfraError::UnknownRegion {
                requested: region.into(),
                runs: self.config.region.clone(),
            });
        }
        let mut state = self.state.lock().await;
        while state.slots.len() < count {
            self.spawn_locked(&mut state, None).await?;
        }
        while state.slots.len() > count {
            if let Some(mut slot) = state.slots.pop() {
                self.stop_child(&mut slot).await?;
            }
        }
        Ok(state.slots.iter_mut().map(|s| self.machine(s)).collect())
    }
}

fn position(state: &State, id: &MachineId) -> Result<usize, InfraError> {
    state
        .slots
        .iter()
        .position(|s| &s.id == id)
        .ok_or_else(|| InfraError::UnknownMachine(id.clone()))
}

/// How a start treats the slot's log.
enum Log {
    /// A new slot: start the log over.
    Fresh,
    /// The same slot again: keep the log, mark why.
    Append(&'static str),
}

fn open_log(path: &Path, log: Log, name: &str) -> Result<std::fs::File, InfraError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    let why = match log {
        Log::Fresh => {
            options.write(true).create(true).truncate(true);
            "start"
        }
        Log::Append(why) => {
            options.append(true).create(true);
            why
        }
    };
    let action = || format!("opening {}", path.display());
    let mut file = options.open(path).map_err(InfraError::io(action()))?;
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    writeln!(file, "--- {now} LocalProcesses: {why} of {name} ---")
        .map_err(InfraError::io(action()))?;
    Ok(file)
}

/// Each port 0 becomes a free port on the same IP. The probe listeners are
/// held until all three are chosen, so the three differ; another process
/// may still take one before the edge binds it (the edge then exits and
/// the probe says so).
fn resolve(requested: Option<Addresses>) -> Result<Addresses, InfraError> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let a = requested.unwrap_or(Addresses {
        http: loopback,
        https: loopback,
        admin: loopback,
    });
    let mut held = Vec::new();
    let mut pick = |addr: SocketAddr| -> Result<SocketAddr, InfraError> {
        if addr.port() != 0 {
            return Ok(addr);
        }
        let listener = std::net::TcpListener::bind(addr).map_err(InfraError::io(format!(
            "finding a free port on {}",
            addr.ip()
        )))?;
        let found = listener
            .local_addr()
            .map_err(InfraError::io("reading a bound address"))?;
        held.push(listener);
        Ok(found)
    };
    Ok(Addresses {
        http: pick(a.http)?,
        https: pick(a.https)?,
        admin: pick(a.admin)?,
    })
}

/// `kill -SIG pid`. A failure is left to the kill that follows the timeout.
async fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if !status.is_ok_and(|s| s.success()) {
        tracing::debug!(pid, signal, "kill failed; the process may have exited");
    }
}

#[cfg(target_os = "linux")]
fn find_setpriv() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("setpriv"))
        .find(|p| p.is_file())
}

#[cfg(not(target_os = "linux"))]
fn find_setpriv() -> Option<PathBuf> {
    None
}
