//! Multi-process support for config-distribution tests: a private Postgres
//! cluster the test may stop and start (initdb + pg_ctl in a temp dir, on a
//! free port), control-plane replicas as real `portico-control-plane serve`
//! processes, and registering edges.

use crate::edge::free_port;
use anyhow::Context;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A 32-byte test key for sealing certificate keys (base64).
pub const ENCRYPTION_KEYS: &str = "test1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A Postgres cluster of this test's own; stopped and deleted on drop.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<&'static str>,
}

impl PrivatePostgres {
    pub fn start() -> anyhow::Result<Self> {
        let bin = postgres_bin_dir()?;
        let dir =
            std::env::temp_dir().join(format!("portico-pg-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir)?;
        // initdb refuses to run as root.
        let run_as = is_root().then_some("postgres");
        if run_as.is_some() {
            let ok = Command::new("chown").arg("postgres").arg(&dir).status()?;
            anyhow::ensure!(ok.success(), "chown postgres {}", dir.display());
        }
        let pg = PrivatePostgres {
            port: free_port()?,
            dir,
            bin,
            run_as,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        )?;
        pg.start_server()?;
        Ok(pg)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the server (again) on the same port and data.
    pub fn start_server(&self) -> anyhow::Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log, "-w", "-o", &opts, "start"],
        )
    }

    /// Stops the server at once (connections are cut).
    pub fn stop_server(&self) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.bin.join(tool);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd.args(args).stdout(Stdio::null()).output()?;
        anyhow::ensure!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop_server();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries not found under /usr/lib/postgresql (scripts/test installs them)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .context("no initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Creates database `name` in a server at `admin_url` (its `postgres` db).
pub async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    // `name` comes from the test source.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// A `portico-control-plane serve` process; killed on drop. Its stdout and
/// stderr go to [`ControlPlane::log`] (its path is printed, so a failing
/// test's output names it); `CP_LOG` sets its `RUST_LOG` (default `warn`).
pub struct ControlPlane {
    pub addr: std::net::SocketAddr,
    /// Where the process logs, across restarts.
    pub log: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
}

impl ControlPlane {
    /// Starts a replica against `database_url` on a free port and waits
    /// until `/healthz` answers.
    pub async fn start(database_url: &str, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        crate::edge::install_crypto();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", database_url),
            ("PORTICO_LISTEN", &addr.to_string()),
            ("PORTICO_OPERATOR_TOKEN", crate::OPERATOR_TOKEN),
            ("PORTICO_ENCRYPTION_KEYS", ENCRYPTION_KEYS),
            ("PORTICO_ALLOW_LOCAL_TARGETS", "true"),
            ("PORTICO_CNAME_TARGET", "edge.portico.test"),
            ("PORTICO_DNS_NAMESERVERS", "127.0.0.1:9"),
            ("PORTICO_RATE_LIMIT_PER_SECOND", "10000"),
            ("PORTICO_RATE_LIMIT_BURST", "10000"),
            ("PORTICO_CONFIG_KEEPALIVE_MS", "1000"),
            ("PORTICO_LOG_FORMAT", "json"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            env.push((k.to_string(), v.to_string()));
        }
        let log = std::env::temp_dir().join(format!(
            "portico-control-plane-{}.log",
            uuid::Uuid::now_v7().simple()
        ));
        eprintln!("control plane on {addr} logs to {}", log.display());
        let mut cp = ControlPlane {
            addr,
            log,
            child: None,
            env,
        };
        cp.restart().await?;
        Ok(cp)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Process ids of the `portico-edge` processes this control plane runs
    /// itself (`PORTICO_INFRA=local`).
    pub fn edge_pids(&self) -> anyhow::Result<Vec<u32>> {
        let parent = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("control plane not running"))?;
        let out = Command::new("pgrep")
            .args(["-P", &parent.to_string(), "portico-edge"])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    /// Sets (or replaces) a variable for the next [`ControlPlane::restart`].
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// (Re)starts the process on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let err = out.try_clone()?;
        let child = Command::new(binary("portico-control-plane")?)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "RUST_LOG",
                std::env::var("CP_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(out)
            .stderr(err)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                anyhow::bail!(
                    "portico-control-plane exited during start-up: {status}\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if client
                .get(format!("{}/healthz", self.base()))
                .send()
                .await
                .is_ok()
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "control plane did not start in time (log: {})",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await; // allow-sleep: polling with a deadline
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A binary of this workspace: next to this executable (a `bench-*`
/// binary) or one directory up (a test, which lives in `deps/`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has no directory")?;
    let candidates = [Some(dir), dir.parent()];
    candidates
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .with_context(|| {
            format!(
                "{name} is missing next to {}: run `cargo build --bins` (scripts/test does)",
                exe.display()
            )
        })
}

/// Registers an edge through the operator API; returns its token.
pub async fn register_edge(base: &str, name: &str) -> anyhow::Result<String> {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/ops/edges"))
        .bearer_auth(crate::OPERATOR_TOKEN)
        .json(&serde_json::json!({"name": name, "region": "test"}))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 201, "edge create: {}", resp.status());
    let body: serde_json::Value = resp.json().await?;
    Ok(body["token"].as_str().context("token")?.to_string())
}
