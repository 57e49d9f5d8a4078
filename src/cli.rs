//! The `loanfolio` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::{Application, shutdown_signal};
use crate::config::Settings;
use crate::state::Role;
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
        /// Report the schema's state and the pending migrations, and whether each is safe
        /// to run while the previous release serves (expand/contract): exit 1 when one
        /// drops, renames or retypes a table or column or adds a NOT NULL column without a
        /// default. Changes nothing.
        #[arg(long)]
        check: bool,
        /// With --check: judge the migrations in this folder (a coming release's) instead
        /// of this binary's.
        #[arg(long, value_name = "DIR", requires = "check")]
        source: Option<PathBuf>,
    },
    /// Operator commands.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Probe a readiness URL (a container HEALTHCHECK needs no curl): exit 0 when it
    /// answers 200 within 5 seconds, 1 otherwise. Reads no configuration.
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8080/readyz")]
        url: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Object storage housekeeping.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Key management.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Back up the database (pg_dump), both buckets and the local master key into a new
    /// folder, with a manifest of checksums; with Vault, the transit key versions the data
    /// needs (the key itself stays in Vault). docs/operations/backup-restore.md.
    Backup {
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Restore a backup into an empty database, the buckets and the key provider; the
    /// backup is verified against its manifest before anything changes.
    Restore {
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// Vault only: an operator token file (reads the transit key's versions).
        #[arg(long, value_name = "PATH")]
        vault_token_file: Option<PathBuf>,
    },
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Records lifecycle (docs/operations/retention.md).
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Dead-letter queues.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Publish again the events published in the last MINUTES before the newest one — after
    /// a restore or a broker lost with messages in it. Consumers are idempotent (inbox), so
    /// events already handled are skipped.
    OutboxRedrive {
        #[arg(long, value_name = "MINUTES", default_value_t = 60)]
        minutes: u32,
    },
    /// Agents: disable one (every session ends at once, tokens are refused) or enable it.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Add demo leads and loans for the test provider's agents (development only).
    DemoSeed {
        #[arg(long, default_value_t = 8)]
        per_agent: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// The dead letters of a consumer: message id, topic and the recorded error.
    List { consumer: String },
    /// Move a consumer's dead letters back to its queue (attempts reset).
    Replay { consumer: String },
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Disable an agent: ends every session of theirs, refuses their tokens (audited).
    Disable { subject: String },
    /// Enable a disabled agent again (audited).
    Enable { subject: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk every hash chain of the audit log; name the first broken link. Exit 1 if any.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// The dry run: per rule, what would be disposed of now and within 30 days, and what
    /// legal holds keep (JSON, counts only). Changes nothing.
    Report,
    /// Run one disposal round now (as the workers' `retention` runner does every
    /// `retention.interval_secs`); refused unless `retention.enabled`.
    Run,
    /// Dispose again every file of the disposal ledger (`retention.ledger_path`) that the
    /// database still holds, as `admin restore` does; safe to run again.
    Replay,
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Create the quarantine and documents buckets if they do not exist.
    CreateBuckets,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a new master key version (Vault: transit rotate; local: a new line in the
    /// key file). New data keys are wrapped with it at once; run `rewrap` next.
    Rotate {
        /// Vault only: a file holding the operator token (policy: rotate, rewrap, config).
        /// Never the service's token; never in the service's configuration.
        #[arg(long, value_name = "PATH", env = "LOANFOLIO_VAULT_OPERATOR_TOKEN_FILE")]
        operator_token_file: Option<PathBuf>,
    },
    /// Rewrap every stored data key under the newest master version. Online and resumable:
    /// safe to interrupt, re-run, or run while the service serves.
    Rewrap {
        #[arg(long, value_name = "PATH", env = "LOANFOLIO_VAULT_OPERATOR_TOKEN_FILE")]
        operator_token_file: Option<PathBuf>,
        /// Vault only: the key version to rewrap to; by default the transit key's newest
        /// (read with the operator token). Data keys under older versions are rewrapped.
        #[arg(long)]
        newest_version: Option<u32>,
    },
    /// End a key epoch: destroy every master key version below `--below` (Vault: raise
    /// min_decryption_version and trim; local: remove the lines). Refused while a stored key
    /// is still wrapped under one of them (run `rewrap` first). Backups whose keys those
    /// versions wrapped no longer open: disposed files are then gone from them too
    /// (docs/operations/retention.md).
    Retire {
        #[arg(long, value_name = "PATH", env = "LOANFOLIO_VAULT_OPERATOR_TOKEN_FILE")]
        operator_token_file: Option<PathBuf>,
        #[arg(long)]
        below: u32,
    },
    /// Create a master key file for the `local` key provider (mode 0600; never overwrites).
    GenerateLocal {
        /// Where to write it (default: kms.local.master_key_file).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Healthcheck { url } = &cli.command {
        return healthcheck(url);
    }
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

fn healthcheck(url: &str) -> ExitCode {
    let probe = async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()?;
        anyhow::Ok(client.get(url).send().await?.status())
    };
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(probe));
    match status {
        Ok(s) if s == reqwest::StatusCode::OK => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("loanfolio healthcheck: {url} answered {s}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("loanfolio healthcheck: {url}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        // Normally answered before the configuration loads (see `run`).
        Command::Healthcheck { url } => {
            Ok(tokio::task::spawn_blocking(move || healthcheck(&url)).await?)
        }
        Command::Serve { no_workers } => serve(settings, Role::Serve, !no_workers).await,
        Command::Worker => serve(settings, Role::Worker, true).await,
        Command::Migrate {
            check: true,
            source,
        } => migrate_check(settings, source).await,
        Command::Migrate { check: false, .. } => migrate(settings).await,
        Command::Admin(command) => admin(command, settings).await,
    }
}

async fn admin(command: AdminCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        AdminCommand::Storage(StorageCommand::CreateBuckets) => create_buckets(&settings).await,
        AdminCommand::Backup { to } => backup(&settings, &to).await,
        AdminCommand::Restore {
            from,
            vault_token_file,
        } => restore(&settings, &from, vault_token_file.as_deref()).await,
        AdminCommand::DemoSeed { per_agent } => demo_seed(settings, per_agent).await,
        AdminCommand::Agents(command) => agents(settings, command).await,
        AdminCommand::OutboxRedrive { minutes } => outbox_redrive(&settings, minutes).await,
        AdminCommand::Dlq(command) => dlq(&settings, command).await,
        AdminCommand::Audit(AuditCommand::Verify) => audit_verify(&settings).await,
        AdminCommand::Retention(RetentionCommand::Report) => retention_report(settings).await,
        AdminCommand::Retention(RetentionCommand::Run) => retention_run(settings).await,
        AdminCommand::Retention(RetentionCommand::Replay) => retention_replay(settings).await,
        AdminCommand::Keys(KeysCommand::Rotate {
            operator_token_file,
        }) => crate::admin::keys::rotate(&settings, operator_token_file.as_deref()).await,
        AdminCommand::Keys(KeysCommand::Rewrap {
            operator_token_file,
            newest_version,
        }) => {
            crate::admin::keys::rewrap(&settings, operator_token_file.as_deref(), newest_version)
                .await
        }
        AdminCommand::Keys(KeysCommand::Retire {
            operator_token_file,
            below,
        }) => crate::admin::keys::retire(&settings, operator_token_file.as_deref(), below).await,
        AdminCommand::Keys(KeysCommand::GenerateLocal { file }) => {
            crate::admin::keys::generate_local(&settings, file).await
        }
    }
}

async fn create_buckets(settings: &Settings) -> anyhow::Result<ExitCode> {
    let storage = crate::storage::Storage::new(&settings.s3)?;
    storage.ensure_buckets().await?;
    println!(
        "buckets ready: {}, {}",
        settings.s3.quarantine_bucket, settings.s3.documents_bucket
    );
    // Borrowers' browsers PUT from the service's own origin.
    let origin = settings
        .server
        .public_base_url
        .origin()
        .ascii_serialization();
    use crate::storage::CorsOutcome;
    let bucket = &settings.s3.quarantine_bucket;
    match storage.allow_browser_uploads(&origin).await? {
        CorsOutcome::Set => println!("CORS: {origin} may PUT into {bucket}"),
        CorsOutcome::Unsupported => println!(
            "CORS: this S3 server has no bucket CORS API; allow PUT from {origin} to {bucket} in its own settings (docs/operations/network.md)"
        ),
        CorsOutcome::Denied => println!(
            "CORS: this key may not set {bucket}'s CORS rule; have the storage administrator allow PUT from {origin} (docs/operations/network.md)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

async fn backup(settings: &Settings, to: &std::path::Path) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let summary = crate::admin::backup::backup(settings, to).await?;
    let key = match settings.kms.provider {
        crate::config::KmsProvider::Local => "master key",
        crate::config::KmsProvider::Vault => "transit key versions needed",
    };
    println!(
        "backup written to {}: database, {} objects ({} bytes), {key}; {:.1} s",
        to.display(),
        summary.objects,
        summary.bytes,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

async fn restore(
    settings: &Settings,
    from: &std::path::Path,
    vault_token_file: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let summary = crate::admin::backup::restore(settings, from, vault_token_file).await?;
    println!(
        "restored from {}: database, {} objects ({} bytes), key checked, {} disposal(s) re-applied from the ledger; {:.1} s",
        from.display(),
        summary.objects,
        summary.bytes,
        summary.disposals_replayed,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

async fn demo_seed(settings: Settings, per_agent: usize) -> anyhow::Result<ExitCode> {
    let state = crate::state::AppState::new(settings, Role::Serve)?;
    let seeded = crate::admin::demo::seed(&state, per_agent).await?;
    println!(
        "seeded {} demo leads (and loans for half of them)",
        seeded.leads
    );
    if let Some(url) = seeded.link_url {
        // Development data: the demo link is shown like any new link, once.
        println!("demo borrower upload link (agent-a1's first loan): {url}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn agents(settings: Settings, command: AgentsCommand) -> anyhow::Result<ExitCode> {
    let state = crate::state::AppState::new(settings, Role::Serve)?;
    let (subject, disabled) = match &command {
        AgentsCommand::Disable { subject } => (subject.as_str(), true),
        AgentsCommand::Enable { subject } => (subject.as_str(), false),
    };
    // The operator at the host, recorded as such in the audit log.
    let operator = crate::auth::Actor::system("cli", "loanfolio admin");
    let outcome = crate::agents::ops::set_disabled(&state, subject, disabled, &operator, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    state.db.close().await;
    match outcome {
        crate::agents::Changed::Unknown => {
            println!("no agent {subject}");
            Ok(ExitCode::FAILURE)
        }
        crate::agents::Changed::Unchanged => {
            println!(
                "{subject} was already {}",
                if disabled { "disabled" } else { "enabled" }
            );
            Ok(ExitCode::SUCCESS)
        }
        crate::agents::Changed::Done { sessions_ended } => {
            if disabled {
                println!("{subject} disabled; {sessions_ended} session(s) ended");
            } else {
                println!("{subject} enabled");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn outbox_redrive(settings: &Settings, minutes: u32) -> anyhow::Result<ExitCode> {
    let pool = db::lazy_pool(&settings.database)?;
    let count = crate::db::outbox::redrive(&pool, minutes).await?;
    pool.close().await;
    println!("{count} event(s) will be published again by the relay");
    Ok(ExitCode::SUCCESS)
}

async fn dlq(settings: &Settings, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let broker = crate::queue::Broker::new(&settings.rabbitmq)?;
    let prefix = &settings.rabbitmq.prefix;
    match command {
        DlqCommand::List { consumer } => {
            let letters = crate::queue::dlq::list(&broker, prefix, &consumer).await?;
            println!("{} dead letter(s) for {consumer}", letters.len());
            for letter in letters {
                println!(
                    "{}\t{}\t{}",
                    letter.message_id.unwrap_or_default(),
                    letter.topic.unwrap_or_default(),
                    letter.error.unwrap_or_default()
                );
            }
        }
        DlqCommand::Replay { consumer } => {
            let moved = crate::queue::dlq::replay(&broker, prefix, &consumer).await?;
            println!("replayed {moved} message(s) to {consumer}");
        }
    }
    broker.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn audit_verify(settings: &Settings) -> anyhow::Result<ExitCode> {
    let pool = db::lazy_pool(&settings.database)?;
    let (checked, broken) = crate::audit::verify(&pool).await?;
    match broken {
        None => {
            println!("audit log intact: {checked} entries verified");
            Ok(ExitCode::SUCCESS)
        }
        Some((seq, why)) => {
            println!("audit log BROKEN at seq {seq}: {why} ({checked} entries verified before it)");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn serve(settings: Settings, role: Role, workers: bool) -> anyhow::Result<ExitCode> {
    let app = Application::build(settings, role)
        .await?
        .with_workers(workers);
    // Say at once whether we can take traffic, and why not.
    let report = crate::state::readiness::check(app.state()).await;
    if !report.is_ready() {
        tracing::warn!(schema = %report.schema.detail, "starting not ready; /readyz says why");
    }
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn migrate_check(settings: Settings, source: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let pool = db::lazy_pool(&settings.database)?;
    let state = db::schema_state(&pool)
        .await
        .context("reading the schema state")?;
    let from_folder;
    let migrator: &sqlx::migrate::Migrator = match &source {
        Some(dir) => {
            from_folder = sqlx::migrate::Migrator::new(dir.as_path())
                .await
                .with_context(|| format!("reading migrations from {}", dir.display()))?;
            &from_folder
        }
        None => {
            println!("{}", state.describe());
            &db::MIGRATOR
        }
    };
    let applied = db::applied_versions(&pool).await?;
    let mut unsafe_steps = 0;
    for m in migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
    {
        let findings = db::migration_check::analyse(m.sql.as_str());
        if findings.is_empty() {
            println!(
                "pending: {} {} — safe beside the running release",
                m.version, m.description
            );
        }
        for f in &findings {
            unsafe_steps += 1;
            println!(
                "UNSAFE:  {} {} — {}: {}",
                m.version, m.description, f.reason, f.statement
            );
        }
    }
    pool.close().await;
    if unsafe_steps > 0 {
        println!(
            "{unsafe_steps} step(s) cannot run while the previous release serves: split them into \
             an expand release and a later contract release (docs/operations/upgrades.md)"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn migrate(settings: Settings) -> anyhow::Result<ExitCode> {
    // A migration may rewrite a large table: the service's per-statement limit is for
    // requests, not for schema changes (0 = none).
    let mut database = settings.database.clone();
    database.statement_timeout_ms = 0;
    let pool = db::lazy_pool(&database)?;
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

async fn retention_run(settings: Settings) -> anyhow::Result<ExitCode> {
    let state = crate::state::AppState::new(settings, Role::Worker)?;
    let outcome =
        crate::retention::disposal::run_round(&state, time::OffsetDateTime::now_utc()).await;
    state.db.close().await;
    match outcome? {
        Some(summary) => {
            println!(
                "disposal round: {} file(s), {} rejected document(s) and {} notification(s) disposed; {} failed",
                summary.disposed, summary.documents, summary.notifications, summary.failed
            );
            Ok(if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        None => {
            println!("another disposal round is running (a worker's): nothing done");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn retention_replay(settings: Settings) -> anyhow::Result<ExitCode> {
    let path = settings
        .retention
        .ledger_path
        .clone()
        .context("retention.ledger_path is not set")?;
    let ledger = crate::retention::ledger::read(&path)?;
    let state = crate::state::AppState::new(settings, Role::Worker)?;
    let replayed = crate::retention::disposal::replay(&state, ledger).await;
    state.db.close().await;
    println!("{} file(s) of the ledger disposed again", replayed?);
    Ok(ExitCode::SUCCESS)
}

async fn retention_report(settings: Settings) -> anyhow::Result<ExitCode> {
    let state = crate::state::AppState::new(settings, Role::Serve)?;
    let report = crate::retention::ops::report_unchecked(&state)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    state.db.close().await;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}
