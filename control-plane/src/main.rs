//! `portico-control-plane`: the API server, the job workers, migrations,
//! tenant administration and the all-in-one development mode.

use anyhow::Context;
use clap::{Parser, Subcommand};
use portico_control_plane::api::edges::create_edge;
use portico_control_plane::api::tenants::create_tenant;
use portico_control_plane::app::{self, Options};
use portico_control_plane::db;
use portico_control_plane::db::tenants::Plan;
use portico_control_plane::settings::Settings;
use portico_control_plane::telemetry;

mod dev;

use dev::dev_mode;

#[derive(Parser)]
#[command(
    name = "portico-control-plane",
    version = portico_control_plane::build_info::long_version(),
    about = "Portico control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (runs migrations first unless PORTICO_MIGRATE=false).
    Serve,
    /// Run the background job workers.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage edge proxies.
    Edge {
        #[command(subcommand)]
        command: EdgeCommand,
    },
    /// Development mode: serve + worker in one process, a demo tenant and a ready curl command.
    Dev,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its id and first API key (shown once) as JSON.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "free", value_parser = ["free", "pro", "enterprise"])]
        plan: String,
    },
}

#[derive(Subcommand)]
enum EdgeCommand {
    /// Register an edge and print its id and token (shown once) as JSON.
    Create {
        /// Unique name, e.g. `fra-1`.
        #[arg(long)]
        name: String,
        /// Region code, e.g. `fra`.
        #[arg(long)]
        region: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = match cli.command {
        // Dev mode binds its DNS server before it reads the settings.
        Command::Dev => return dev_mode().await,
        _ => Settings::from_env().map_err(|e| anyhow::anyhow!("configuration error: {e}"))?,
    };
    telemetry::init(settings.log_format);
    match cli.command {
        Command::Serve => {
            let worker = settings.worker_in_serve;
            let running = app::start(settings, Options::new(true, worker)).await?;
            tracing::info!(addr = %running.addr, worker, "serving");
            running.run_until_signal().await
        }
        Command::Worker => {
            let running = app::start(settings, Options::new(false, true)).await?;
            tracing::info!("worker running");
            running.run_until_signal().await
        }
        Command::Migrate => {
            let pool = db::connect(&settings.database_url, 2).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Tenant {
            command: TenantCommand::Create { name, plan },
        } => {
            let pool = db::connect(&settings.database_url, 2).await?;
            if settings.run_migrations {
                db::migrate(&pool).await?;
            }
            let plan = Plan::parse(&plan).context("plan must be free, pro or enterprise")?;
            let created = create_tenant(&pool, &name, plan)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", serde_json::to_string_pretty(&created)?);
            Ok(())
        }
        Command::Edge {
            command: EdgeCommand::Create { name, region },
        } => {
            let pool = db::connect(&settings.database_url, 2).await?;
            if settings.run_migrations {
                db::migrate(&pool).await?;
            }
            let created = create_edge(&pool, &name, &region)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", serde_json::to_string_pretty(&created)?);
            Ok(())
        }
        // Returned above.
        Command::Dev => Ok(()),
    }
}
