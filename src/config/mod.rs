//! Typed settings: `config/default.toml`, then an optional site file (`--config`), then
//! `LOANFOLIO__SECTION__KEY` environment variables. Unknown keys are errors so that a typo
//! never falls back to a default silently. Every secret may be given inline or as a
//! `<key>_file` path (systemd `LoadCredential`, Docker/Ansible secrets).

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

mod reminders;
mod retention;
mod sections;

pub use reminders::Schedule;
pub use retention::{RETENTION_RULES, RetentionRule, RetentionSettings};
pub use sections::*;

/// The documented defaults, compiled in so the binary works without its source tree.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
pub const ENV_PREFIX: &str = "LOANFOLIO__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// figment's message names the key path and the source (file or environment variable).
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid configuration: `{key}`: {message}")]
    Key { key: String, message: String },
}

impl ConfigError {
    fn key(key: &str, message: impl Into<String>) -> Self {
        Self::Key {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub worker: WorkerSettings,
    pub log: LogSettings,
    pub database: DatabaseSettings,
    pub rabbitmq: RabbitMqSettings,
    pub redis: RedisSettings,
    pub s3: S3Settings,
    pub clamd: ClamdSettings,
    pub oidc: OidcSettings,
    pub kms: KmsSettings,
    pub readiness: ReadinessSettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub idempotency: IdempotencySettings,
    pub documents: DocumentSettings,
    pub bureau: BureauSettings,
    pub los: LosSettings,
    pub notifications: NotificationSettings,
    pub reminders: ReminderSettings,
    pub retention: RetentionSettings,
}

impl Settings {
    /// Defaults, then `extra` (a site file), then the process environment.
    pub fn load(extra: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(extra, Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// As [`Settings::load`], with the environment given explicitly (tests).
    pub fn load_from(extra: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::new().merge(Toml::string(DEFAULT_TOML));
        if let Some(path) = extra {
            if !path.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        let settings: Settings = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Invalid(describe_figment_error(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.server.tls_cert_file.is_some() != self.server.tls_key_file.is_some() {
            return Err(ConfigError::key(
                "server.tls_cert_file",
                "server.tls_cert_file and server.tls_key_file go together",
            ));
        }
        if let Some(mode) = &self.database.ssl_mode
            && !matches!(
                mode.as_str(),
                "disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full"
            )
        {
            return Err(ConfigError::key(
                "database.ssl_mode",
                "one of disable, allow, prefer, require, verify-ca, verify-full",
            ));
        }
        if let Err(e) = Schedule::from_settings(&self.reminders) {
            return Err(ConfigError::Invalid(format!("{e:#}")));
        }
        self.database.url()?;
        self.rabbitmq.url()?;
        self.redis.url()?;
        self.s3.secret_access_key()?;
        self.oidc.client_secret()?;
        self.los.webhook_secrets()?;
        self.validate_kms()?;
        self.validate_algorithms()?;
        if let Some((key, message)) = self
            .retention
            .below_floor()
            .or_else(|| self.retention.missing_ledger())
        {
            return Err(ConfigError::Key { key, message });
        }
        self.validate_limits()
    }

    /// A Vault provider logs in by AppRole (both files) or with a token.
    fn validate_kms(&self) -> Result<(), ConfigError> {
        if self.kms.provider == KmsProvider::Vault {
            let vault = &self.kms.vault;
            match (&vault.role_id_file, &vault.secret_id_file) {
                (Some(_), Some(_)) => {}
                (None, None) => {
                    vault.token()?;
                }
                _ => {
                    return Err(ConfigError::key(
                        "kms.vault.role_id_file",
                        "kms.vault.role_id_file and kms.vault.secret_id_file go together",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Only asymmetric JWS algorithms: a shared-secret one would let anyone holding the
    /// client secret mint tokens.
    fn validate_algorithms(&self) -> Result<(), ConfigError> {
        for alg in &self.auth.algorithms {
            if !matches!(
                alg.as_str(),
                "RS256"
                    | "RS384"
                    | "RS512"
                    | "PS256"
                    | "PS384"
                    | "PS512"
                    | "ES256"
                    | "ES384"
                    | "EdDSA"
            ) {
                return Err(ConfigError::key(
                    "auth.algorithms",
                    format!("{alg} is not an asymmetric JWS algorithm this service accepts"),
                ));
            }
        }
        Ok(())
    }

    /// Limits, timeouts and sizes within what the service can work with.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("rate_limit.api_per_ip", self.rate_limit.api_per_ip),
            (
                "rate_limit.api_per_principal",
                self.rate_limit.api_per_principal,
            ),
            ("rate_limit.public_per_ip", self.rate_limit.public_per_ip),
            ("rate_limit.auth_per_ip", self.rate_limit.auth_per_ip),
            ("readiness.public_per_ip", self.readiness.public_per_ip),
        ] {
            if value == 0 {
                return Err(ConfigError::key(key, "must be at least 1"));
            }
        }
        if !(60..=900).contains(&self.documents.upload_url_ttl_secs) {
            return Err(ConfigError::key(
                "documents.upload_url_ttl_secs",
                "must be between 60 and 900 (15 minutes)",
            ));
        }
        if self.server.header_read_timeout_secs == 0 {
            return Err(ConfigError::key(
                "server.header_read_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::key(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        if self.s3.quarantine_bucket == self.s3.documents_bucket {
            return Err(ConfigError::key(
                "s3.documents_bucket",
                "must differ from s3.quarantine_bucket",
            ));
        }
        Ok(())
    }
}

/// figment reports every error of an extraction; name each key and where it came from.
fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("`{}`: ", e.path.join("."))
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(src) => format!(" (from {} {src})", m.name),
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            format!("{key}{}{source}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A secret given inline or as a file; exactly one is allowed.
pub(super) fn resolve_secret(
    key: &str,
    inline: &Option<SecretString>,
    file: &Option<PathBuf>,
) -> Result<SecretString, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::key(
            key,
            format!("give either `{key}` or `{key}_file`, not both"),
        )),
        (Some(value), None) => {
            if value.expose_secret().is_empty() {
                Err(ConfigError::key(key, "is empty"))
            } else {
                Ok(value.clone())
            }
        }
        (None, Some(path)) => {
            let raw = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::key(
                    &format!("{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let value = raw.trim_end_matches(['\n', '\r']).to_owned();
            if value.is_empty() {
                return Err(ConfigError::key(
                    &format!("{key}_file"),
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(SecretString::from(value))
        }
        (None, None) => Err(ConfigError::key(
            key,
            format!("missing: set `{key}` or `{key}_file`"),
        )),
    }
}

impl DatabaseSettings {
    pub fn url(&self) -> Result<SecretString, ConfigError> {
        resolve_secret("database.url", &self.url, &self.url_file)
    }
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.acquire_timeout_secs)
    }
}

impl RabbitMqSettings {
    pub fn url(&self) -> Result<SecretString, ConfigError> {
        resolve_secret("rabbitmq.url", &self.url, &self.url_file)
    }
}

impl RedisSettings {
    pub fn url(&self) -> Result<SecretString, ConfigError> {
        resolve_secret("redis.url", &self.url, &self.url_file)
    }
}

impl S3Settings {
    /// Another S3 server's credentials (tests run against two implementations).
    pub fn set_credentials(&mut self, access_key_id: &str, secret_access_key: &str) {
        self.access_key_id = access_key_id.to_owned();
        self.secret_access_key = Some(SecretString::from(secret_access_key.to_owned()));
        self.secret_access_key_file = None;
    }

    pub fn secret_access_key(&self) -> Result<SecretString, ConfigError> {
        resolve_secret(
            "s3.secret_access_key",
            &self.secret_access_key,
            &self.secret_access_key_file,
        )
    }
}

impl VaultKmsSettings {
    pub fn token(&self) -> Result<SecretString, ConfigError> {
        resolve_secret("kms.vault.token", &self.token, &self.token_file)
    }
}

/// Builders for tests and tools that adjust settings after loading.
impl Settings {
    pub fn set_database_url(&mut self, url: impl Into<String>) {
        self.database.url = Some(SecretString::from(url.into()));
        self.database.url_file = None;
    }
    pub fn set_rabbitmq_url(&mut self, url: impl Into<String>) {
        self.rabbitmq.url = Some(SecretString::from(url.into()));
        self.rabbitmq.url_file = None;
    }
    pub fn set_redis_url(&mut self, url: impl Into<String>) {
        self.redis.url = Some(SecretString::from(url.into()));
        self.redis.url_file = None;
    }
}

#[cfg(test)]
// figment::Jail's closures return figment's large error type; that is its API.
#[allow(clippy::result_large_err)]
mod tests;
