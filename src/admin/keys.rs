//! `loanfolio admin keys …`: master key rotation, rewrap, the end of a key epoch, and a new
//! local key file (docs/operations/key-rotation.md, docs/operations/retention.md).

use std::process::ExitCode;

use anyhow::Context;

use crate::config::Settings;
use crate::db;

pub async fn rotate(
    settings: &Settings,
    operator_token_file: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let kms = operator_kms(settings, operator_token_file)?;
    kms.rotate().await?;
    println!(
        "rotated the {} master key; now run `loanfolio admin keys rewrap`",
        kms.provider_name()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn rewrap(
    settings: &Settings,
    operator_token_file: Option<&std::path::Path>,
    newest_version: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let kms = operator_kms(settings, operator_token_file)?;
    let newest = match (&kms, newest_version) {
        (crate::crypto::Kms::Local(file), _) => file.newest_version()?,
        (_, Some(v)) => v,
        // The operator's policy may read the key's versions.
        (crate::crypto::Kms::Vault(keys), None) => keys.newest_version().await?,
        (crate::crypto::Kms::Misconfigured(why), None) => anyhow::bail!("{why}"),
    };
    let pool = db::lazy_pool(&settings.database)?;
    let keys = crate::crypto::keyring::KeyRing::new(kms);
    let count = keys.rewrap_all(&pool, newest).await?;
    println!("rewrapped {count} key(s) to master version {newest}");
    Ok(ExitCode::SUCCESS)
}

pub async fn retire(
    settings: &Settings,
    operator_token_file: Option<&std::path::Path>,
    below: u32,
) -> anyhow::Result<ExitCode> {
    let kms = operator_kms(settings, operator_token_file)?;
    let pool = db::lazy_pool(&settings.database)?;
    if let Some(last) = crate::crypto::keyring::KeyRing::last_epoch(&pool).await? {
        anyhow::ensure!(
            below > last,
            "versions below {last} were retired already: --below must be newer; nothing was changed"
        );
    }
    let left = crate::crypto::keyring::KeyRing::wrapped_below(&pool, below).await?;
    pool.close().await;
    anyhow::ensure!(
        left == 0,
        "{left} stored key(s) are still wrapped under a master version below {below}: run `loanfolio admin keys rewrap` first; nothing was changed"
    );
    kms.retire_below(below).await?;
    let pool = db::lazy_pool(&settings.database)?;
    crate::crypto::keyring::KeyRing::record_epoch(&pool, below, kms.provider_name()).await?;
    pool.close().await;
    println!(
        "retired {} master key versions below {below}: backups whose data keys they wrapped no longer open",
        kms.provider_name()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn generate_local(
    settings: &Settings,
    file: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let path = file.unwrap_or_else(|| settings.kms.local.master_key_file.clone());
    crate::crypto::local::LocalKeyFile::new(&path).generate()?;
    println!("wrote a new master key file at {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// The key provider with the operator's rights (Vault: the operator token given here).
fn operator_kms(
    settings: &Settings,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<crate::crypto::Kms> {
    use crate::config::KmsProvider;
    match settings.kms.provider {
        KmsProvider::Local => Ok(crate::crypto::Kms::new(&settings.kms)),
        KmsProvider::Vault => {
            let path = token_file.context("the vault provider needs --operator-token-file")?;
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(crate::crypto::Kms::Vault(Box::new(
                crate::crypto::vault::VaultKeys::new(&settings.kms.vault, token.trim())?,
            )))
        }
    }
}
