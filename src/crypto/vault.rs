//! The `vault` key provider: HashiCorp Vault's transit engine (docs/security.md). Data keys come
//! from `datakey/plaintext` on a derived key with `context` = the owner's id; unwrapping is
//! `decrypt` with the same context. The service's token may only do those two; rotation and
//! rewrapping take the operator's token, given at invocation.

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::ExposeSecret;
use vaultrs::api::transit::requests::{
    DataKeyType, DecryptDataRequest, GenerateDataKeyRequest, RewrapDataRequest,
};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use zeroize::Zeroizing;

use crate::config::VaultKmsSettings;

pub struct VaultKeys {
    client: VaultClient,
    mount: String,
    key: String,
}

impl std::fmt::Debug for VaultKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKeys")
            .field("mount", &self.mount)
            .field("key", &self.key)
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

impl VaultKeys {
    pub fn new(settings: &VaultKmsSettings, token: &str) -> anyhow::Result<Self> {
        let client = VaultClient::new(
            VaultClientSettingsBuilder::default()
                .address(settings.address.as_str())
                .token(token)
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
        .context("Vault client")?;
        Ok(Self {
            client,
            mount: settings.transit_mount.clone(),
            key: settings.key_name.clone(),
        })
    }

    pub fn from_settings(settings: &VaultKmsSettings) -> anyhow::Result<Self> {
        let token = settings.token()?;
        Self::new(settings, token.expose_secret())
    }

    pub async fn generate(
        &self,
        context: &str,
    ) -> anyhow::Result<(Zeroizing<[u8; 32]>, String, u32)> {
        let response = vaultrs::transit::generate::data_key(
            &self.client,
            &self.mount,
            &self.key,
            DataKeyType::Plaintext,
            Some(GenerateDataKeyRequest::builder().context(STANDARD.encode(context))),
        )
        .await
        .context("Vault transit datakey")?;
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
        let response = vaultrs::transit::data::decrypt(
            &self.client,
            &self.mount,
            &self.key,
            ciphertext,
            Some(DecryptDataRequest::builder().context(STANDARD.encode(context))),
        )
        .await
        .context("Vault transit decrypt")?;
        let encoded = Zeroizing::new(response.plaintext);
        let plaintext = Zeroizing::new(STANDARD.decode(encoded.as_bytes()).context("not base64")?);
        anyhow::ensure!(plaintext.len() == 32, "the unwrapped key is not 256 bits");
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&plaintext);
        Ok(key)
    }

    /// Operator: re-encrypt under the newest key version without exposing the key.
    pub async fn rewrap(&self, ciphertext: &str, context: &str) -> anyhow::Result<(String, u32)> {
        let response = vaultrs::transit::data::rewrap(
            &self.client,
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
        vaultrs::transit::key::rotate(&self.client, &self.mount, &self.key)
            .await
            .context("Vault transit rotate")?;
        Ok(())
    }

    /// The service's policy allows only datakey and decrypt, so the probe is a datakey.
    pub async fn check(&self) -> anyhow::Result<()> {
        self.generate("readiness-probe").await.map(|_| ())
    }
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
}
