//! Key management (docs/security.md): one 256-bit data key (DEK) per borrower file, generated
//! and wrapped by the key provider (`vault` transit in production, `local` — a master key
//! file — for development, tests and very small installs), stored only wrapped. Plaintext
//! DEKs live in a small TTL cache, zeroized on drop.

pub mod blind_index;
pub mod field;
pub mod keyring;
pub mod local;
pub mod stream;
pub mod vault;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::config::{KmsProvider, KmsSettings};

pub type DataKey = Zeroizing<[u8; 32]>;

/// AES-256-GCM with a random nonce: `nonce (12) | ciphertext | tag`.
pub(crate) fn aead_seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(key).expect("a 32-byte key");
    let mut nonce = [0u8; 12];
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("the operating system's random generator failed");
    let sealed = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of a key cannot fail");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    out
}

pub(crate) fn aead_open(
    key: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    anyhow::ensure!(sealed.len() >= 12 + 16, "too short");
    let cipher = Aes256Gcm::new_from_slice(key).expect("a 32-byte key");
    let nonce: [u8; 12] = sealed[..12].try_into()?;
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &sealed[12..],
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| anyhow::anyhow!("does not verify"))
}

#[derive(Debug)]
pub enum Kms {
    Local(local::LocalKeyFile),
    Vault(Box<vault::VaultKeys>),
    /// Vault configured but unusable (e.g. no token): readiness says why; nothing is
    /// stored unencrypted meanwhile (fail closed).
    Misconfigured(String),
}

impl Kms {
    pub fn new(settings: &KmsSettings) -> Self {
        match settings.provider {
            KmsProvider::Local => {
                Kms::Local(local::LocalKeyFile::new(&settings.local.master_key_file))
            }
            KmsProvider::Vault => match vault::VaultKeys::from_settings(&settings.vault) {
                Ok(keys) => Kms::Vault(Box::new(keys)),
                Err(e) => Kms::Misconfigured(format!("{e:#}")),
            },
        }
    }

    pub fn provider_name(&self) -> &'static str {
        match self {
            Kms::Local(_) => "local",
            Kms::Vault(_) | Kms::Misconfigured(_) => "vault",
        }
    }

    pub async fn check(&self) -> anyhow::Result<()> {
        match self {
            Kms::Local(file) => file.load().map(|_| ()),
            Kms::Vault(keys) => keys.check().await,
            Kms::Misconfigured(why) => anyhow::bail!("{why}"),
        }
    }

    /// A fresh data key for `context` (a borrower file id): plaintext, wrapped form, and the
    /// master key version that wrapped it.
    pub async fn generate(&self, context: &str) -> anyhow::Result<(DataKey, String, u32)> {
        match self {
            Kms::Local(file) => {
                let mut key = Zeroizing::new([0u8; 32]);
                SystemRandom::new()
                    .fill(key.as_mut())
                    .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
                let (wrapped, version) = file.wrap(&key, context)?;
                Ok((key, wrapped, version))
            }
            Kms::Vault(keys) => keys.generate(context).await,
            Kms::Misconfigured(why) => anyhow::bail!("{why}"),
        }
    }

    pub async fn unwrap(&self, wrapped: &str, context: &str) -> anyhow::Result<DataKey> {
        match self {
            Kms::Local(file) => file.unwrap_key(wrapped, context),
            Kms::Vault(keys) => keys.unwrap_key(wrapped, context).await,
            Kms::Misconfigured(why) => anyhow::bail!("{why}"),
        }
    }

    /// Operator: wrap again under the newest master version.
    pub async fn rewrap(&self, wrapped: &str, context: &str) -> anyhow::Result<(String, u32)> {
        match self {
            Kms::Local(file) => {
                let key = file.unwrap_key(wrapped, context)?;
                file.wrap(&key, context)
            }
            Kms::Vault(keys) => keys.rewrap(wrapped, context).await,
            Kms::Misconfigured(why) => anyhow::bail!("{why}"),
        }
    }

    /// Operator, the end of a key epoch: master key versions below `below` are destroyed.
    pub async fn retire_below(&self, below: u32) -> anyhow::Result<()> {
        match self {
            Kms::Local(file) => file.retire_below(below).map(|_| ()),
            Kms::Vault(keys) => keys.retire_below(below).await,
            Kms::Misconfigured(why) => anyhow::bail!("{why}"),
        }
    }

    /// Operator: a new master key version.
    pub async fn rotate(&self) -> anyhow::Result<()> {
        match self {
            Kms::Local(file) => file.rotate().map(|_| ()),
            Kms::Vault(keys) => keys.rotate().await,
            Kms::Misconfigured(why) => anyhow::bail!("{why}"),
        }
    }
}

/// The SHA-256 of a bearer token (upload links, unsubscribe links): what is stored and
/// looked up, never the token itself.
pub fn token_hash(token: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).to_vec()
}
