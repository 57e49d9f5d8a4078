//! `loanfolio admin backup` / `admin restore` (issue 8): everything needed to bring an
//! installation back on an empty stack — the PostgreSQL database (`pg_dump` custom format),
//! both buckets (every object, through the same S3 client the service uses), and the master
//! key (the `local` key file, or Vault's transit key backup). Without the master key the
//! documents and every PII field are unrecoverable, so the key is part of every backup.
//!
//! The backup folder holds encrypted documents, a database whose PII columns are encrypted,
//! and the key that decrypts them: store it like the production system itself (encrypted
//! at rest, access-controlled, off site), and keep the key backup apart where possible.
//!
//! Layout: `database.dump`, `buckets/{quarantine,documents}/<object path>`, `master.key` or
//! `vault-transit-key.json`, and `manifest.json` (every file with its size and SHA-256, so a
//! restore refuses a damaged backup before it changes anything).

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
}

#[derive(Debug, Default)]
pub struct Summary {
    pub objects: usize,
    pub bytes: u64,
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

/// A client for Vault's transit backup/restore with the service's CA bundle and a timeout.
fn vault_http(settings: &Settings) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none());
    Ok(crate::tls::pin_roots(
        builder,
        "kms.vault.ca_file",
        settings.kms.vault.ca_file.as_deref(),
    )?
    .build()?)
}

/// Back up into `dir`, which must not exist or be empty.
pub async fn backup(
    settings: &Settings,
    dir: &Path,
    vault_token_file: Option<&Path>,
) -> anyhow::Result<Summary> {
    if dir.exists() {
        ensure!(
            std::fs::read_dir(dir)?.next().is_none(),
            "{} is not empty",
            dir.display()
        );
    }
    // The folder holds the key and borrower data: the operator's eyes only.
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let mut files = BTreeMap::new();

    // The database first: objects written after it are harmless extras on restore, while
    // an object missing for a row would be a lost document.
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

    let storage = Storage::new(&settings.s3)?;
    let mut summary = Summary::default();
    for (role, store) in buckets(&storage) {
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
            let token = read_token(vault_token_file)?;
            let vault = &settings.kms.vault;
            let url = vault.address.join(&format!(
                "v1/{}/backup/{}",
                vault.transit_mount, vault.key_name
            ))?;
            let answer: serde_json::Value = vault_http(settings)?
                .get(url)
                .header("X-Vault-Token", token)
                .send()
                .await?
                .error_for_status()
                .context(
                    "Vault transit backup (the key needs exportable and allow_plaintext_backup)",
                )?
                .json()
                .await?;
            let key = dir.join("vault-transit-key.json");
            tokio::fs::write(&key, serde_json::to_vec(&answer["data"])?).await?;
            restrict(&key)?;
            files.insert(
                "vault-transit-key.json".to_owned(),
                sha256_file(&key).await?,
            );
            "vault"
        }
    };

    let pool = crate::db::lazy_pool(&settings.database)?;
    let schema_version = crate::db::applied_versions(&pool)
        .await?
        .into_iter()
        .max()
        .unwrap_or(0);
    pool.close().await;
    let manifest = Manifest {
        format: 1,
        created_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)?,
        schema_version,
        kms_provider: kms_provider.to_owned(),
        files,
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
    let file = file.context("--vault-token-file is required with the vault key provider (an operator token: transit backup/restore)")?;
    Ok(std::fs::read_to_string(file)
        .with_context(|| format!("reading {}", file.display()))?
        .trim()
        .to_owned())
}

/// Restore `dir` into the configured database (which must be empty), buckets and key.
pub async fn restore(
    settings: &Settings,
    dir: &Path,
    vault_token_file: Option<&Path>,
) -> anyhow::Result<Summary> {
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(dir.join("manifest.json")).context("reading manifest.json")?,
    )?;
    ensure!(
        manifest.format == 1,
        "unknown backup format {}",
        manifest.format
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

    let pool = crate::db::lazy_pool(&settings.database)?;
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_schema = 'public'",
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
    match manifest.kms_provider.as_str() {
        "local" => {
            let target = &settings.kms.local.master_key_file;
            let backed_up = std::fs::read(dir.join("master.key"))?;
            match std::fs::read(target) {
                Ok(existing) if existing == backed_up => {}
                Ok(_) => bail!(
                    "{} exists with a different key: refusing to overwrite it",
                    target.display()
                ),
                Err(_) => {
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(target, &backed_up)?;
                    restrict(target)?;
                }
            }
        }
        "vault" => {
            let token = read_token(vault_token_file)?;
            let vault = &settings.kms.vault;
            let backup: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("vault-transit-key.json"))?)?;
            let url = vault.address.join(&format!(
                "v1/{}/restore/{}",
                vault.transit_mount, vault.key_name
            ))?;
            vault_http(settings)?
                .post(url)
                .header("X-Vault-Token", token)
                .json(&serde_json::json!({"backup": backup["backup"]}))
                .send()
                .await?
                .error_for_status()
                .context("Vault transit restore")?;
        }
        other => bail!("unknown key provider {other} in the manifest"),
    }

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
    Ok(summary)
}
