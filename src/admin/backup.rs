//! `loanfolio admin backup` / `admin restore` (issue 8): everything needed to bring an
//! installation back on an empty stack — the PostgreSQL database (`pg_dump` custom format),
//! both buckets (every object, through the same S3 client the service uses), and the master
//! key when it is the `local` key file. Without the master key the documents and every PII
//! field are unrecoverable.
//!
//! With the `vault` provider the key never leaves Vault: transit keys are not exportable
//! (docs/security.md), and the Vault is usually the lender's shared one, which a restore of
//! Loanfolio must never roll back. The backup records instead which versions of the transit
//! key its wrapped data keys need, and `restore` refuses to change anything unless Vault
//! still has every one of them (Vault's own backups — raft snapshots — are the Vault team's
//! runbook: docs/operations/backup-restore.md).
//!
//! The backup folder holds encrypted documents, a database whose PII columns are encrypted,
//! and the key that decrypts them: store it like the production system itself (encrypted
//! at rest, access-controlled, off site), and keep the key backup apart where possible.
//!
//! Layout: `database.dump`, `buckets/{quarantine,documents}/<object path>`, `master.key`
//! (local provider), and `manifest.json` (every file with its size and SHA-256, so a restore
//! refuses a damaged backup before it changes anything; with Vault, the transit key and the
//! versions needed).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use futures::TryStreamExt;
use object_store::aws::AmazonS3;
use object_store::{ObjectStore, ObjectStoreExt};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::config::{KmsProvider, Settings};
use crate::crypto::local::hex;
use crate::storage::Storage;

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: String,
    pub schema_version: i64,
    pub kms_provider: String,
    /// Relative path → (bytes, hex SHA-256).
    pub files: BTreeMap<String, (u64, String)>,
    /// Vault only: the transit key and the versions of it the wrapped data keys need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transit: Option<TransitKeyNeeds>,
    /// The disposals the database held when it was dumped, and the newest one's time: a
    /// restore needs a ledger at least that recent (docs/operations/retention.md).
    #[serde(default)]
    pub disposals: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_disposal_at: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TransitKeyNeeds {
    pub mount: String,
    pub key: String,
    pub versions: Vec<u32>,
}

/// Format 2: Vault keys are referenced (versions needed), never copied.
const FORMAT: u32 = 2;

#[derive(Debug, Default)]
pub struct Summary {
    pub objects: usize,
    pub bytes: u64,
    /// Disposals of the ledger re-applied to the restored database.
    pub disposals_replayed: usize,
}

/// libpq's environment for the configured database, without putting the password on a
/// command line (where `ps` shows it).
fn pg_env(settings: &Settings) -> anyhow::Result<(String, Vec<(&'static str, String)>)> {
    let url = settings.database.url()?;
    let mut url = url::Url::parse(url.expose_secret())
        .map_err(|_| anyhow::anyhow!("database.url is not a valid URL"))?;
    let mut env = Vec::new();
    if let Some(password) = url.password() {
        let password = percent_encoding::percent_decode_str(password)
            .decode_utf8_lossy()
            .into_owned();
        env.push(("PGPASSWORD", password));
    }
    let _ = url.set_password(None);
    // The same TLS checks as the service's own connections (libpq reads these).
    let mode = match (&settings.database.ssl_mode, &settings.database.ca_file) {
        (Some(mode), _) => Some(mode.clone()),
        (None, Some(_)) => Some("verify-full".to_owned()),
        (None, None) => None,
    };
    if let Some(mode) = mode {
        env.push(("PGSSLMODE", mode));
    }
    if let Some(ca) = &settings.database.ca_file {
        env.push(("PGSSLROOTCERT", ca.display().to_string()));
    }
    Ok((url.to_string(), env))
}

fn buckets(storage: &Storage) -> [(&'static str, &Arc<AmazonS3>); 2] {
    [
        ("quarantine", &storage.quarantine),
        ("documents", &storage.documents),
    ]
}

/// Size and SHA-256 of a file, read in chunks (a dump may be many gigabytes).
async fn sha256_file(path: &Path) -> anyhow::Result<(u64, String)> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

/// The transit key versions that wrapped the stored data keys.
async fn kek_versions_in_use(settings: &Settings) -> anyhow::Result<Vec<u32>> {
    let pool = crate::db::lazy_pool(&settings.database)?;
    let versions: Vec<i32> = sqlx::query_scalar!(
        r#"select kek_version as "kek_version!" from borrower_files where wrapped_dek is not null
          union select kek_version from keyring order by 1"#
    )
    .fetch_all(&pool)
    .await
    .context("reading the key versions in use")?;
    pool.close().await;
    Ok(versions.into_iter().map(|v| v.max(0) as u32).collect())
}

/// What Vault must still have for a restore: every version in `needs`, not below the key's
/// minimum decryption version. Nothing is changed when it does not.
async fn check_transit_versions(
    settings: &Settings,
    needs: &TransitKeyNeeds,
    vault_token_file: Option<&Path>,
) -> anyhow::Result<()> {
    let vault = &settings.kms.vault;
    ensure!(
        needs.mount == vault.transit_mount && needs.key == vault.key_name,
        "the backup's data keys are wrapped by {}/keys/{}, but this configuration names {}/keys/{}",
        needs.mount,
        needs.key,
        vault.transit_mount,
        vault.key_name
    );
    let token = read_token(vault_token_file)?;
    let keys = crate::crypto::vault::VaultKeys::new(vault, &token)?;
    let (available, min_decryption) = keys
        .versions()
        .await
        .context("reading the transit key (operator token, policy loanfolio-operator)")?;
    let missing: Vec<u32> = needs
        .versions
        .iter()
        .copied()
        .filter(|v| !available.contains(v) || *v < min_decryption)
        .collect();
    ensure!(
        missing.is_empty(),
        "Vault cannot unwrap this backup: it needs versions {:?} of {}/keys/{}, and Vault has {:?} \
         (min_decryption_version {}); missing {:?}. Nothing was changed. Restore Vault from its \
         own snapshot first (docs/operations/backup-restore.md), never the other way round",
        needs.versions,
        needs.mount,
        needs.key,
        available,
        min_decryption,
        missing
    );
    Ok(())
}

/// Make `dir` for a backup: it must not exist or be empty; it holds the key and borrower
/// data, so only its owner may enter it.
fn prepare_folder(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.exists() {
        ensure!(
            std::fs::read_dir(dir)?.next().is_none(),
            "{} is not empty",
            dir.display()
        );
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Copy every object of both buckets under `dir/buckets/`, each file's size and SHA-256
/// into `files`.
async fn copy_objects(
    storage: &Storage,
    dir: &Path,
    files: &mut BTreeMap<String, (u64, String)>,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    for (role, store) in buckets(storage) {
        let objects: Vec<_> = store.list(None).try_collect().await?;
        for meta in objects {
            let relative = format!("buckets/{role}/{}", meta.location);
            let target = dir.join(&relative);
            ensure!(
                !meta.location.as_ref().contains(".."),
                "refusing object path {}",
                meta.location
            );
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            let mut stream = store.get(&meta.location).await?.into_stream();
            let mut file = tokio::fs::File::create(&target).await?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = stream.try_next().await? {
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            files.insert(relative, (size, hex(&hasher.finalize())));
            summary.objects += 1;
            summary.bytes += size;
        }
    }
    Ok(summary)
}

/// Back up into `dir`, which must not exist or be empty.
pub async fn backup(settings: &Settings, dir: &Path) -> anyhow::Result<Summary> {
    prepare_folder(dir)?;
    let mut files = BTreeMap::new();

    // The database first: objects written after it are harmless extras on restore, while
    // an object missing for a row would be a lost document.
    // The key versions the dump needs are among those in use just before it and just after
    // it (a rewrap running meanwhile moves rows from one to the other): both, so the
    // restore's check can never pass for data it cannot unwrap.
    let versions_before = match settings.kms.provider {
        KmsProvider::Vault => kek_versions_in_use(settings).await?,
        KmsProvider::Local => Vec::new(),
    };
    let (url, env) = pg_env(settings)?;
    let dump = dir.join("database.dump");
    let status = tokio::process::Command::new("pg_dump")
        .args(["--format=custom", "--no-password", "--file"])
        .arg(&dump)
        .arg(format!("--dbname={url}"))
        .envs(env)
        .status()
        .await
        .context("running pg_dump (PostgreSQL client tools)")?;
    ensure!(status.success(), "pg_dump failed ({status})");
    files.insert("database.dump".to_owned(), sha256_file(&dump).await?);

    let summary = copy_objects(&Storage::new(&settings.s3)?, dir, &mut files).await?;

    let mut transit = None;
    let kms_provider = match settings.kms.provider {
        KmsProvider::Local => {
            let key = dir.join("master.key");
            tokio::fs::copy(&settings.kms.local.master_key_file, &key)
                .await
                .context("copying the local master key file")?;
            restrict(&key)?;
            files.insert("master.key".to_owned(), sha256_file(&key).await?);
            "local"
        }
        KmsProvider::Vault => {
            // The key stays in Vault (not exportable): only which versions are needed.
            let mut versions = versions_before;
            versions.extend(kek_versions_in_use(settings).await?);
            versions.sort_unstable();
            versions.dedup();
            transit = Some(TransitKeyNeeds {
                mount: settings.kms.vault.transit_mount.clone(),
                key: settings.kms.vault.key_name.clone(),
                versions,
            });
            "vault"
        }
    };

    let pool = crate::db::lazy_pool(&settings.database)?;
    let schema_version = crate::db::applied_versions(&pool)
        .await?
        .into_iter()
        .max()
        .unwrap_or(0);
    let disposed =
        sqlx::query!(r#"select count(*) as "count!", max(disposed_at) as last from disposals"#)
            .fetch_one(&pool)
            .await
            .context("counting the disposals")?;
    pool.close().await;
    let manifest = Manifest {
        format: FORMAT,
        created_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)?,
        schema_version,
        kms_provider: kms_provider.to_owned(),
        files,
        transit,
        disposals: disposed.count,
        last_disposal_at: disposed.last.map(crate::domain::rfc3339),
    };
    tokio::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )
    .await?;
    Ok(summary)
}

fn restrict(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn read_token(file: Option<&Path>) -> anyhow::Result<String> {
    let file = file.context(
        "--vault-token-file is required to restore with the vault key provider (an operator \
         token: the restore checks the transit key's versions)",
    )?;
    Ok(std::fs::read_to_string(file)
        .with_context(|| format!("reading {}", file.display()))?
        .trim()
        .to_owned())
}

/// The backup's manifest, once every file matches it and this release can restore it —
/// checked before anything changes.
async fn verified_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(dir.join("manifest.json")).context("reading manifest.json")?,
    )?;
    ensure!(
        manifest.format == 1 || manifest.format == FORMAT,
        "unknown backup format {}",
        manifest.format
    );
    ensure!(
        manifest.kms_provider != "vault" || manifest.format == FORMAT,
        "a format-1 backup with the vault provider holds a transit key export, which this \
         release never restores (transit keys are not exportable): restore Vault from its \
         snapshot, then take a new backup"
    );
    // Verify everything before changing anything.
    for (relative, (size, sha)) in &manifest.files {
        let (actual_size, actual_sha) = sha256_file(&dir.join(relative)).await?;
        ensure!(
            actual_size == *size && actual_sha == *sha,
            "{relative} does not match the manifest: the backup is damaged"
        );
    }
    ensure!(
        manifest.schema_version <= crate::db::expected_version(),
        "the backup's schema ({}) is newer than this release's ({}): restore with the release that made it",
        manifest.schema_version,
        crate::db::expected_version()
    );
    Ok(manifest)
}

/// Put the backed-up local master key in place (never over a different one); a Vault's
/// versions were checked before anything changed.
fn restore_key(settings: &Settings, dir: &Path, provider: &str) -> anyhow::Result<()> {
    match provider {
        "local" => {
            let target = &settings.kms.local.master_key_file;
            let backed_up = std::fs::read(dir.join("master.key"))?;
            match std::fs::read(target) {
                Ok(existing) if existing == backed_up => {}
                Ok(_) => {
                    // The usual cause: a key epoch retired versions this backup needs.
                    let versions = |path: &Path| -> Vec<u32> {
                        crate::crypto::local::LocalKeyFile::new(path)
                            .load()
                            .map(|keys| keys.iter().map(|(v, _)| *v).collect())
                            .unwrap_or_default()
                    };
                    let (have, need) = (versions(target), versions(&dir.join("master.key")));
                    let retired: Vec<u32> =
                        need.iter().copied().filter(|v| !have.contains(v)).collect();
                    if !retired.is_empty() && !have.is_empty() {
                        bail!(
                            "this backup's data keys need master key version(s) {retired:?}, which {} no longer holds (a key epoch retired them, `admin keys retire`): the backup is retired with them; restore a backup taken after the epoch. Nothing was changed",
                            target.display()
                        );
                    }
                    bail!(
                        "{} exists with a different key: refusing to overwrite it",
                        target.display()
                    )
                }
                Err(_) => {
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(target, &backed_up)?;
                    restrict(target)?;
                }
            }
        }
        // Checked above, before anything changed: Vault has every version needed.
        "vault" => {}
        other => bail!("unknown key provider {other} in the manifest"),
    }
    Ok(())
}

/// Restore `dir` into the configured database (which must be empty), buckets and key.
pub async fn restore(
    settings: &Settings,
    dir: &Path,
    vault_token_file: Option<&Path>,
) -> anyhow::Result<Summary> {
    let manifest = verified_manifest(dir).await?;
    // Before anything changes: a restore without the ledger could bring disposed borrowers
    // back (docs/operations/retention.md).
    let ledger = read_ledger(settings, &manifest)?;
    if manifest.kms_provider == "vault" {
        let needs = manifest
            .transit
            .as_ref()
            .context("the manifest names the vault provider but no transit key")?;
        check_transit_versions(settings, needs, vault_token_file).await?;
    }

    let pool = crate::db::lazy_pool(&settings.database)?;
    let tables: i64 = sqlx::query_scalar!(
        r#"select count(*) as "tables!" from information_schema.tables where table_schema = 'public'"#
    )
    .fetch_one(&pool)
    .await
    .context("connecting to the target database")?;
    pool.close().await;
    ensure!(
        tables == 0,
        "the target database is not empty ({tables} tables): restore into a new, empty database"
    );

    // The key first: without it nothing else is usable.
    restore_key(settings, dir, &manifest.kms_provider)?;

    let (url, env) = pg_env(settings)?;
    let status = tokio::process::Command::new("pg_restore")
        .args(["--no-password", "--exit-on-error", "--single-transaction"])
        .arg(format!("--dbname={url}"))
        .arg(dir.join("database.dump"))
        .envs(env)
        .status()
        .await
        .context("running pg_restore (PostgreSQL client tools)")?;
    ensure!(status.success(), "pg_restore failed ({status})");

    let storage = Storage::new(&settings.s3)?;
    storage.ensure_buckets().await?;
    let mut summary = Summary::default();
    for (role, store) in buckets(&storage) {
        let prefix = format!("buckets/{role}/");
        for (relative, (size, _)) in manifest.files.range(prefix.clone()..) {
            let Some(location) = relative.strip_prefix(&prefix) else {
                break;
            };
            let bytes = tokio::fs::read(dir.join(relative)).await?;
            store
                .put(&object_store::path::Path::parse(location)?, bytes.into())
                .await
                .with_context(|| format!("restoring object {location}"))?;
            summary.objects += 1;
            summary.bytes += size;
        }
    }
    summary.disposals_replayed = replay_disposals(settings, ledger).await?;
    Ok(summary)
}

/// The disposal ledger `retention.ledger_path` names, checked against the backup: refused
/// when the path names no file, when the backup records disposals and no ledger is set,
/// and when the ledger is older than the backup's newest disposal (not the current one).
fn read_ledger(
    settings: &Settings,
    manifest: &Manifest,
) -> anyhow::Result<Vec<crate::retention::ledger::LedgerEntry>> {
    let Some(path) = &settings.retention.ledger_path else {
        ensure!(
            manifest.disposals == 0,
            "this backup records {} disposal(s), and retention.ledger_path is not set: point it at the disposal ledger, or the restore could bring disposed borrower files back; nothing was changed",
            manifest.disposals
        );
        return Ok(Vec::new());
    };
    ensure!(
        path.exists(),
        "the disposal ledger {} (retention.ledger_path) is missing: without it this restore could bring disposed borrower files back. Put the ledger back first (it is kept outside the database and its backups); nothing was changed",
        path.display()
    );
    let entries = crate::retention::ledger::read(path)?;
    if let Some(last) = &manifest.last_disposal_at {
        let last =
            time::OffsetDateTime::parse(last, &time::format_description::well_known::Rfc3339)?;
        let newest = entries.iter().map(|e| e.disposed_at).max();
        ensure!(
            newest.is_some_and(|n| n >= last),
            "the disposal ledger {} is older than this backup (its newest entry {}, the backup's newest disposal {}): it is not the installation's current ledger; nothing was changed",
            path.display(),
            newest.map_or_else(|| "none".to_owned(), crate::domain::rfc3339),
            crate::domain::rfc3339(last)
        );
    }
    Ok(entries)
}

/// Dispose again every file of the ledger the restored database still holds, and delete
/// its objects the restored buckets brought back.
async fn replay_disposals(
    settings: &Settings,
    ledger: Vec<crate::retention::ledger::LedgerEntry>,
) -> anyhow::Result<usize> {
    if ledger.is_empty() {
        return Ok(0);
    }
    let state = crate::state::AppState::new(settings.clone(), crate::state::Role::Worker)?;
    let replayed = crate::retention::disposal::replay(&state, ledger).await;
    state.db.close().await;
    replayed
}
