//! The `loanfolio` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::{Application, Role, shutdown_signal};
use crate::config::Settings;
use crate::{db, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "loanfolio",
    version,
    about = "Loanfolio: leads, borrower documents, credit pulls and LOS tracking for mortgage agents",
    long_about = "Loanfolio: leads, borrower documents, credit pulls and LOS tracking for mortgage agents.\n\n\
        Configuration: config/default.toml (built in) < --config FILE < LOANFOLIO__SECTION__KEY \
        environment variables. Every secret may be given as <key>_file instead."
)]
pub struct Cli {
    /// A site configuration file layered over the built-in defaults.
    #[arg(long, global = true, value_name = "PATH", env = "LOANFOLIO_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the borrower upload page (with the background workers unless
    /// --no-workers). Never changes the schema: stays not-ready until `migrate` has run.
    Serve {
        /// Run only the HTTP API; start `loanfolio worker` processes separately.
        #[arg(long)]
        no_workers: bool,
    },
    /// Run the queue consumers, outbox relay and schedulers, with /healthz, /readyz and
    /// /metrics on `worker.admin_listen`.
    Worker,
    /// Apply pending migrations as the schema owner and exit (under an advisory lock, so
    /// concurrent runs cannot collide).
    Migrate {
        /// Report the schema's state and the pending migrations; change nothing.
        #[arg(long)]
        check: bool,
    },
    /// Operator commands.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Object storage housekeeping.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Key management.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Create the quarantine and documents buckets if they do not exist.
    CreateBuckets,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a master key file for the `local` key provider (mode 0600; never overwrites).
    GenerateLocal {
        /// Where to write it (default: kms.local.master_key_file).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("loanfolio: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loanfolio: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, settings)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "loanfolio failed");
            eprintln!("loanfolio: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { no_workers } => {
            // The workers arrive with the queue framework; until then `serve` is the API.
            let _ = no_workers;
            serve(settings, Role::Serve).await
        }
        Command::Worker => serve(settings, Role::Worker).await,
        Command::Migrate { check } => migrate(settings, check).await,
        Command::Admin(AdminCommand::Storage(StorageCommand::CreateBuckets)) => {
            let storage = crate::storage::Storage::new(&settings.s3)?;
            storage.ensure_buckets().await?;
            println!(
                "buckets ready: {}, {}",
                settings.s3.quarantine_bucket, settings.s3.documents_bucket
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin(AdminCommand::Keys(KeysCommand::GenerateLocal { file })) => {
            let path = file.unwrap_or_else(|| settings.kms.local.master_key_file.clone());
            crate::crypto::local::LocalKeyFile::new(&path).generate()?;
            println!("wrote a new master key file at {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(settings: Settings, role: Role) -> anyhow::Result<ExitCode> {
    let app = Application::build(settings, role).await?;
    // Say at once whether we can take traffic, and why not.
    let report = crate::readiness::check(app.state()).await;
    if !report.is_ready() {
        tracing::warn!(schema = %report.schema.detail, "starting not ready; /readyz says why");
    }
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn migrate(settings: Settings, check: bool) -> anyhow::Result<ExitCode> {
    let pool = db::lazy_pool(&settings.database)?;
    let before = db::schema_state(&pool)
        .await
        .context("reading the schema state")?;
    if check {
        println!("{}", before.describe());
        if let db::SchemaState::Behind { pending, .. } = &before {
            for version in pending {
                let name = db::MIGRATOR
                    .iter()
                    .find(|m| m.version == *version)
                    .map(|m| m.description.to_string())
                    .unwrap_or_default();
                println!("pending: {version} {name}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    db::migrate(&pool).await?;
    let after = db::schema_state(&pool).await?;
    tracing::info!(detail = %after.describe(), "migrations applied");
    println!("{}", after.describe());
    pool.close().await;
    Ok(if after.is_ready() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
