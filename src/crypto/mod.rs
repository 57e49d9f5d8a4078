//! Key management. `local` (a master key file) exists now; the Vault transit provider,
//! envelope data keys and field encryption arrive with the leads issue.

pub mod local;

use crate::config::{KmsProvider, KmsSettings};

#[derive(Debug, Clone)]
pub enum Kms {
    Local(local::LocalKeyFile),
    /// Configured but not yet implemented in this release: readiness reports it down.
    Vault,
}

impl Kms {
    pub fn new(settings: &KmsSettings) -> Self {
        match settings.provider {
            KmsProvider::Local => {
                Kms::Local(local::LocalKeyFile::new(&settings.local.master_key_file))
            }
            KmsProvider::Vault => Kms::Vault,
        }
    }

    pub fn provider_name(&self) -> &'static str {
        match self {
            Kms::Local(_) => "local",
            Kms::Vault => "vault",
        }
    }

    pub async fn check(&self) -> anyhow::Result<()> {
        match self {
            Kms::Local(file) => file.load().map(|_| ()),
            Kms::Vault => anyhow::bail!("the vault key provider is not available in this release"),
        }
    }
}
