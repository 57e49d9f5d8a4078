//! The `vault` key provider: HashiCorp Vault's transit engine (docs/security.md). Data keys come
//! from `datakey/plaintext` on a derived key with `context` = the owner's id; unwrapping is
//! `decrypt` with the same context. The service's token may only do those two; rotation and
//! rewrapping take the operator's token, given at invocation.

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::ExposeSecret;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vaultrs::api::transit::requests::{
    DataKeyType, DecryptDataRequest, GenerateDataKeyRequest, RewrapDataRequest,
};

use vaultrs::api::AuthInfo;
use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};
use zeroize::Zeroizing;

use crate::config::VaultKmsSettings;

pub struct VaultKeys {
    /// The client and the token it sends; replaced on an AppRole login.
    client: tokio::sync::RwLock<VaultClient>,
    login: Option<AppRole>,
    /// When the current token must be renewed or replaced (AppRole only).
    lease: std::sync::Mutex<Option<Lease>>,
    /// One login or renewal at a time; other callers keep using the current token while
    /// it is valid, and wait only when there is none.
    refreshing: tokio::sync::Mutex<()>,
    /// After a failed login or renewal: no new attempt before this instant (a Vault that
    /// refuses or does not answer costs one attempt per interval, not one per request).
    retry_at: std::sync::Mutex<Option<Instant>>,
    /// AppRole logins and token renewals so far (the metrics and tests read them).
    logins: AtomicU64,
    renewals: AtomicU64,
    mount: String,
    key: String,
}

/// The service's AppRole identity: role id and secret id, read from files at each login so
/// that a rotated secret id is picked up without a restart.
struct AppRole {
    mount: String,
    role_id_file: PathBuf,
    secret_id_file: PathBuf,
}

/// Between two failed logins or renewals.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// A token this close to its expiry is not presented any more.
const EXPIRY_MARGIN: Duration = Duration::from_secs(1);
/// A token refused (403) sooner than this after its login is kept: a policy refusal must not
/// turn every request into a new login.
const MIN_TOKEN_AGE_TO_DROP: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Lease {
    /// When the token was obtained.
    obtained: Instant,
    /// When the token expires.
    expires: Instant,
    /// The token's TTL as granted at login: renewals extend it by as much until the role's
    /// maximum TTL caps them.
    ttl: Duration,
    /// False once a renewal came back capped: the next refresh is a new login.
    renewable: bool,
}

impl Lease {
    fn login(auth: &AuthInfo, now: Instant) -> Self {
        let ttl = Duration::from_secs(auth.lease_duration);
        Lease {
            obtained: now,
            expires: now + ttl,
            ttl,
            renewable: auth.renewable,
        }
    }

    fn renewed(self, granted: Duration, renewable: bool) -> Self {
        Lease {
            obtained: self.obtained,
            expires: Instant::now() + granted,
            ttl: self.ttl,
            renewable: renewable && granted >= self.ttl,
        }
    }

    /// Refresh once two thirds of the TTL have passed (Vault's own agent renews at that
    /// point), so a request never presents a token that expires under it.
    fn due(&self) -> bool {
        self.expires.saturating_duration_since(Instant::now()) < self.ttl / 3
    }

    /// Still safe to present.
    fn usable(&self) -> bool {
        self.expires > Instant::now() + EXPIRY_MARGIN
    }
}

impl std::fmt::Debug for VaultKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKeys")
            .field("mount", &self.mount)
            .field("key", &self.key)
            .field("approle", &self.login.is_some())
            .finish_non_exhaustive()
    }
}

/// `vault:v3:…` → 3.
pub fn version_of(ciphertext: &str) -> anyhow::Result<u32> {
    ciphertext
        .strip_prefix("vault:v")
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(v, _)| v.parse().ok())
        .context("not a Vault transit ciphertext")
}

fn read_secret_file(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let raw = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    let value = Zeroizing::new(raw.trim().to_owned());
    anyhow::ensure!(!value.is_empty(), "{} is empty", path.display());
    Ok(value)
}

impl VaultKeys {
    /// A client presenting `token` (an operator's, or the service's long-lived one).
    pub fn new(settings: &VaultKmsSettings, token: &str) -> anyhow::Result<Self> {
        Self::with(settings, token, None)
    }

    /// The service's keys: an AppRole login when `role_id_file` is set (the token is
    /// obtained, renewed before it expires and replaced by a new login when renewal fails,
    /// all in-process), else the configured token.
    pub fn from_settings(settings: &VaultKmsSettings) -> anyhow::Result<Self> {
        match (&settings.role_id_file, &settings.secret_id_file) {
            (Some(role_id_file), Some(secret_id_file)) => {
                let login = AppRole {
                    mount: settings.approle_mount.clone(),
                    role_id_file: role_id_file.clone(),
                    secret_id_file: secret_id_file.clone(),
                };
                Self::with(settings, "", Some(login))
            }
            _ => {
                let token = settings.token()?;
                Self::new(settings, token.expose_secret())
            }
        }
    }

    fn with(
        settings: &VaultKmsSettings,
        token: &str,
        login: Option<AppRole>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            client: tokio::sync::RwLock::new(client(settings, token)?),
            login,
            lease: std::sync::Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            retry_at: std::sync::Mutex::new(None),
            logins: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
            mount: settings.transit_mount.clone(),
            key: settings.key_name.clone(),
        })
    }

    fn lease(&self) -> Option<Lease> {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_lease(&self, lease: Option<Lease>) {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = lease;
    }

    fn backing_off(&self) -> bool {
        self.retry_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| Instant::now() < at)
    }

    fn set_retry_at(&self, at: Option<Instant>) {
        *self.retry_at.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// The client, with a token that is valid now. AppRole tokens are renewed when two
    /// thirds of their grant have passed, and replaced by a new login when renewal fails or
    /// no longer extends them (their maximum TTL is near). While the current token is still
    /// valid, one caller refreshes and the others go on with it; a failed refresh is
    /// retried after `RETRY_INTERVAL`, so an outage never queues requests behind logins.
    async fn client(&self) -> anyhow::Result<tokio::sync::RwLockReadGuard<'_, VaultClient>> {
        let Some(login) = &self.login else {
            return Ok(self.client.read().await);
        };
        let lease = self.lease();
        if lease.is_some_and(|l| !l.due()) {
            return Ok(self.client.read().await);
        }
        if lease.is_some_and(|l| l.usable()) {
            if !self.backing_off()
                && let Ok(_one_at_a_time) = self.refreshing.try_lock()
                && let Err(e) = self.refresh(login).await
            {
                self.set_retry_at(Some(Instant::now() + RETRY_INTERVAL));
                tracing::warn!(error = %format!("{e:#}"), "could not refresh the Vault token; the current one is still valid");
            }
            return Ok(self.client.read().await);
        }
        // No usable token: wait for the refresh in progress, or make one.
        let _one_at_a_time = self.refreshing.lock().await;
        if self.lease().is_some_and(|l| l.usable()) {
            return Ok(self.client.read().await);
        }
        anyhow::ensure!(
            !self.backing_off(),
            "no Vault token: the last login failed less than {} s ago",
            RETRY_INTERVAL.as_secs()
        );
        if let Err(e) = self.refresh(login).await {
            self.set_retry_at(Some(Instant::now() + RETRY_INTERVAL));
            return Err(e);
        }
        Ok(self.client.read().await)
    }

    /// Renew the token when it can be extended, else log in again. The caller holds
    /// `refreshing`.
    async fn refresh(&self, login: &AppRole) -> anyhow::Result<()> {
        if let Some(lease) = self.lease()
            && lease.renewable
            && lease.usable()
        {
            let renewed = {
                let client = self.client.read().await;
                vaultrs::token::renew_self(&*client, None).await
            };
            match renewed {
                Ok(auth) => {
                    let fresh =
                        lease.renewed(Duration::from_secs(auth.lease_duration), auth.renewable);
                    // A renewal capped by the role's maximum TTL is kept while it lasts;
                    // the refresh after it is a new login.
                    if !fresh.due() {
                        self.renewals.fetch_add(1, Ordering::Relaxed);
                        self.set_lease(Some(fresh));
                        self.set_retry_at(None);
                        return Ok(());
                    }
                }
                Err(e) => {
                    tracing::info!(error = %e, "the Vault token could not be renewed; logging in again");
                }
            }
        }
        let role_id = read_secret_file(&login.role_id_file).context("kms.vault.role_id_file")?;
        let secret_id =
            read_secret_file(&login.secret_id_file).context("kms.vault.secret_id_file")?;
        let asked = Instant::now();
        let auth = {
            let client = self.client.read().await;
            vaultrs::auth::approle::login(&*client, &login.mount, &role_id, &secret_id)
                .await
                .context("Vault AppRole login")?
        };
        // The lease counts from the request, not from whenever the write lock is free.
        let lease = Lease::login(&auth, asked);
        self.client.write().await.set_token(&auth.client_token);
        self.set_lease(Some(lease));
        self.set_retry_at(None);
        self.logins.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            ttl_secs = auth.lease_duration,
            "logged in to Vault with AppRole"
        );
        Ok(())
    }

    /// AppRole logins and token renewals since start.
    pub fn token_events(&self) -> (u64, u64) {
        (
            self.logins.load(Ordering::Relaxed),
            self.renewals.load(Ordering::Relaxed),
        )
    }

    /// After Vault refused the token (revoked, expired early): forget it, so that the next
    /// call logs in again — unless it is fresh (a refusal by policy would otherwise turn
    /// every request into a login).
    fn forget_token_on(&self, error: &vaultrs::error::ClientError) {
        if self.login.is_some()
            && matches!(
                error,
                vaultrs::error::ClientError::APIError { code: 403, .. }
            )
        {
            let mut lease = self.lease.lock().unwrap_or_else(|p| p.into_inner());
            if lease.is_some_and(|l| l.obtained.elapsed() >= MIN_TOKEN_AGE_TO_DROP) {
                *lease = None;
            }
        }
    }

    pub async fn generate(
        &self,
        context: &str,
    ) -> anyhow::Result<(Zeroizing<[u8; 32]>, String, u32)> {
        let client = self.client().await?;
        let response = vaultrs::transit::generate::data_key(
            &*client,
            &self.mount,
            &self.key,
            DataKeyType::Plaintext,
            Some(GenerateDataKeyRequest::builder().context(STANDARD.encode(context))),
        )
        .await
        .inspect_err(|e| self.forget_token_on(e))
        .context("Vault transit datakey")?;
        drop(client);
        // The base64 text is the key too: wiped on drop like the decoded bytes.
        let encoded = Zeroizing::new(
            response
                .plaintext
                .context("Vault returned no plaintext key")?,
        );
        let plaintext = Zeroizing::new(
            STANDARD
                .decode(encoded.as_bytes())
                .context("Vault's plaintext key is not base64")?,
        );
        anyhow::ensure!(
            plaintext.len() == 32,
            "Vault returned a key that is not 256 bits"
        );
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&plaintext);
        let version = version_of(&response.ciphertext)?;
        Ok((key, response.ciphertext, version))
    }

    pub async fn unwrap_key(
        &self,
        ciphertext: &str,
        context: &str,
    ) -> anyhow::Result<Zeroizing<[u8; 32]>> {
        let client = self.client().await?;
        let response = vaultrs::transit::data::decrypt(
            &*client,
            &self.mount,
            &self.key,
            ciphertext,
            Some(DecryptDataRequest::builder().context(STANDARD.encode(context))),
        )
        .await
        .inspect_err(|e| self.forget_token_on(e))
        .context("Vault transit decrypt")?;
        drop(client);
        let encoded = Zeroizing::new(response.plaintext);
        let plaintext = Zeroizing::new(STANDARD.decode(encoded.as_bytes()).context("not base64")?);
        anyhow::ensure!(plaintext.len() == 32, "the unwrapped key is not 256 bits");
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&plaintext);
        Ok(key)
    }

    /// Operator: re-encrypt under the newest key version without exposing the key.
    pub async fn rewrap(&self, ciphertext: &str, context: &str) -> anyhow::Result<(String, u32)> {
        let client = self.client().await?;
        let response = vaultrs::transit::data::rewrap(
            &*client,
            &self.mount,
            &self.key,
            ciphertext,
            Some(RewrapDataRequest::builder().context(STANDARD.encode(context))),
        )
        .await
        .context("Vault transit rewrap")?;
        let version = version_of(&response.ciphertext)?;
        Ok((response.ciphertext, version))
    }

    /// Operator: a new key version.
    pub async fn rotate(&self) -> anyhow::Result<()> {
        let client = self.client().await?;
        vaultrs::transit::key::rotate(&*client, &self.mount, &self.key)
            .await
            .context("Vault transit rotate")?;
        Ok(())
    }

    /// Operator, the end of a key epoch: raise the key's minimum decryption and encryption
    /// versions to `below` and trim every older version from Vault's keyring, so nothing
    /// wrapped under them — in any backup — unwraps again.
    pub async fn retire_below(&self, below: u32) -> anyhow::Result<()> {
        let client = self.client().await?;
        vaultrs::transit::key::update(
            &*client,
            &self.mount,
            &self.key,
            Some(
                &mut vaultrs::api::transit::requests::UpdateKeyConfigurationRequest::builder()
                    .min_decryption_version(u64::from(below))
                    .min_encryption_version(u64::from(below)),
            ),
        )
        .await
        .context("Vault transit key config (min_decryption_version)")?;
        vaultrs::transit::key::trim(&*client, &self.mount, &self.key, u64::from(below))
            .await
            .context("Vault transit key trim")?;
        Ok(())
    }

    /// Operator: the newest version of the transit key (what `rewrap` wraps under).
    pub async fn newest_version(&self) -> anyhow::Result<u32> {
        let (versions, _) = self.versions().await?;
        versions
            .last()
            .copied()
            .context("the transit key has no versions")
    }

    /// Operator: the transit key's versions and its minimum decryption version (what a
    /// restore checks before it changes anything).
    pub async fn versions(&self) -> anyhow::Result<(Vec<u32>, u32)> {
        let client = self.client().await?;
        let key = vaultrs::transit::key::read(&*client, &self.mount, &self.key)
            .await
            .context("Vault transit key read")?;
        let vaultrs::api::transit::responses::ReadKeyData::Symmetric(versions) = key.keys else {
            anyhow::bail!("the transit key is not symmetric");
        };
        let mut versions: Vec<u32> = versions.keys().filter_map(|v| v.parse().ok()).collect();
        versions.sort_unstable();
        Ok((versions, u32::try_from(key.min_decryption_version)?))
    }

    /// The service's policy allows only datakey and decrypt, so the probe is a datakey.
    pub async fn check(&self) -> anyhow::Result<()> {
        self.generate("readiness-probe").await.map(|_| ())
    }
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn client(settings: &VaultKmsSettings, token: &str) -> anyhow::Result<VaultClient> {
    VaultClient::new(
        VaultClientSettingsBuilder::default()
            .address(settings.address.as_str())
            .token(token)
            // A Vault that does not answer is down: fail the request (503) rather than hold it.
            .timeout(Some(REQUEST_TIMEOUT))
            // Never from VAULT_SKIP_VERIFY in the environment.
            .verify(true)
            .ca_certs(
                settings
                    .ca_file
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            )
            .build()
            .context("Vault client settings")?,
    )
    .context("Vault client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_ciphertext_prefix() {
        assert_eq!(version_of("vault:v3:abcd").unwrap(), 3);
        assert!(version_of("local:v3:abcd").is_err());
        assert!(version_of("vault:vx:abcd").is_err());
    }

    #[test]
    fn a_token_is_refreshed_after_two_thirds_and_a_capped_renewal_is_the_last() {
        let ttl = Duration::from_secs(30);
        let fresh = Lease {
            obtained: Instant::now(),
            expires: Instant::now() + ttl,
            ttl,
            renewable: true,
        };
        assert!(!fresh.due());
        let late = Lease {
            expires: Instant::now() + Duration::from_secs(9),
            ..fresh
        };
        assert!(late.due(), "less than a third left");
        let renewed = late.renewed(ttl, true);
        assert!(!renewed.due() && renewed.renewable);
        let capped = late.renewed(Duration::from_secs(20), true);
        assert!(!capped.due(), "kept while it lasts");
        assert!(!capped.renewable, "the next refresh logs in again");
        assert!(!late.renewed(ttl, false).renewable);
    }
}
