//! Typed settings: `config/default.toml`, then an optional site file (`--config`), then
//! `LOANFOLIO__SECTION__KEY` environment variables. Unknown keys are errors so that a typo
//! never falls back to a default silently. Every secret may be given inline or as a
//! `<key>_file` path (systemd `LoadCredential`, Docker/Ansible secrets).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The documented defaults, compiled in so the binary works without its source tree.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");
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
}

/// Reminders to borrowers about outstanding document requests (issue 7).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReminderSettings {
    pub enabled: bool,
    /// The first reminder goes out this many days after the request.
    pub first_after_days: u32,
    /// Then one every this many days…
    pub every_days: u32,
    /// …at most this many in all.
    pub max_reminders: u32,
    /// Local times (`HH:MM`, in `timezone`) between which nothing is sent; the span may
    /// cross midnight. Equal start and end: no quiet hours.
    pub quiet_hours_start: String,
    pub quiet_hours_end: String,
    /// Days on which nothing is sent: `mon` … `sun`.
    pub quiet_days: Vec<String>,
    /// An IANA time zone, e.g. `America/New_York`.
    pub timezone: String,
    /// A loan's requests falling due within this many minutes of each other go out as one
    /// message.
    pub digest_window_minutes: u32,
    /// How often the scheduler looks for due reminders.
    pub tick_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSettings {
    /// The From header, e.g. `Lender Loans <no-reply@lender.example>`.
    pub from: String,
    pub reply_to: Option<String>,
    /// Branding in every message.
    pub lender_name: String,
    pub support_phone: String,
    /// A folder whose `<template>.txt` / `<template>.html` files replace the built-in ones.
    pub templates_dir: Option<PathBuf>,
    pub smtp: SmtpSettings,
    pub sms: SmsSettings,
}

/// An HTTP SMS gateway: JSON `{"to", "body"}` POSTed with an auth header.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsSettings {
    /// Absent: no SMS is sent at all.
    pub gateway_url: Option<url::Url>,
    pub auth_header: String,
    auth_token: Option<SecretString>,
    auth_token_file: Option<PathBuf>,
    pub timeout_secs: u64,
}

impl SmsSettings {
    /// For tests and tools that build settings in code.
    pub fn set_auth_token(&mut self, token: &str) {
        self.auth_token = Some(SecretString::from(token.to_owned()));
        self.auth_token_file = None;
    }

    pub fn auth_token(&self) -> Result<Option<SecretString>, ConfigError> {
        if self.auth_token.is_none() && self.auth_token_file.is_none() {
            return Ok(None);
        }
        resolve_secret(
            "notifications.sms.auth_token",
            &self.auth_token,
            &self.auth_token_file,
        )
        .map(Some)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain SMTP: local development only.
    None,
    Starttls,
    /// SMTPS (TLS from the first byte, usually port 465).
    Implicit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// A PEM bundle of the CA(s) the server's certificate is verified against (TLS in
    /// transit, docs/security.md): trusted alone, not beside the system's roots — except by the
    /// S3 object client and RabbitMQ, which add it to them.
    pub ca_file: Option<PathBuf>,
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    password: Option<SecretString>,
    password_file: Option<PathBuf>,
    pub timeout_secs: u64,
}

impl SmtpSettings {
    pub fn password(&self) -> Result<Option<SecretString>, ConfigError> {
        if self.password.is_none() && self.password_file.is_none() {
            return Ok(None);
        }
        resolve_secret(
            "notifications.smtp.password",
            &self.password,
            &self.password_file,
        )
        .map(Some)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LosSettings {
    /// The LOS's base URL (docs/integrations/los.md).
    pub base_url: url::Url,
    api_key: Option<SecretString>,
    api_key_file: Option<PathBuf>,
    /// Secrets accepted on webhook signatures; several during a rotation.
    #[serde(default)]
    webhook_secrets: Vec<SecretString>,
    /// A file with one accepted webhook secret per line (instead of `webhook_secrets`).
    webhook_secrets_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
    /// Webhook bodies above this are refused (413), after the signature header passed.
    pub webhook_body_limit_bytes: usize,
    /// How often loans in `submitted`/`underwriting` are compared with the LOS.
    pub reconcile_every_secs: u64,
    pub breaker: BreakerSettings,
}

impl LosSettings {
    pub fn api_key(&self) -> Result<Option<SecretString>, ConfigError> {
        if self.api_key.is_none() && self.api_key_file.is_none() {
            return Ok(None);
        }
        resolve_secret("los.api_key", &self.api_key, &self.api_key_file).map(Some)
    }

    pub fn webhook_secrets_file(&self) -> Option<&Path> {
        self.webhook_secrets_file.as_deref()
    }

    pub fn webhook_secrets(&self) -> Result<Vec<SecretString>, ConfigError> {
        if self
            .webhook_secrets
            .iter()
            .any(|s| s.expose_secret().is_empty())
        {
            // An empty secret would make an HMAC anyone can compute.
            return Err(ConfigError::key(
                "los.webhook_secrets",
                "holds an empty secret",
            ));
        }
        let mut secrets = self.webhook_secrets.clone();
        if let Some(path) = &self.webhook_secrets_file {
            let raw = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::key(
                    "los.webhook_secrets_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            secrets.extend(
                raw.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| SecretString::from(l.to_owned())),
            );
        }
        Ok(secrets)
    }

    /// For tests and tools that build settings in code.
    pub fn set_api_key(&mut self, key: impl Into<String>) {
        self.api_key = Some(SecretString::from(key.into()));
        self.api_key_file = None;
    }

    pub fn set_webhook_secrets(&mut self, secrets: &[&str]) {
        self.webhook_secrets = secrets
            .iter()
            .map(|s| SecretString::from((*s).to_owned()))
            .collect();
        self.webhook_secrets_file = None;
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BureauSettings {
    /// The bureau's base URL (docs/integrations/bureau.md).
    pub base_url: url::Url,
    api_key: Option<SecretString>,
    api_key_file: Option<PathBuf>,
    /// PEM bundle the bureau's TLS certificate must chain to (else the system roots).
    pub ca_file: Option<PathBuf>,
    /// mTLS: a PEM client certificate chain and its private key (both, or neither).
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
    pub breaker: BreakerSettings,
    /// OAuth2 client credentials instead of the API key, when the bureau wants them.
    pub oauth2: Option<OAuth2Settings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Settings {
    pub token_url: url::Url,
    pub client_id: String,
    client_secret: Option<SecretString>,
    client_secret_file: Option<PathBuf>,
    pub scope: Option<String>,
}

impl OAuth2Settings {
    pub fn new(token_url: url::Url, client_id: &str, client_secret: &str) -> Self {
        Self {
            token_url,
            client_id: client_id.to_owned(),
            client_secret: Some(SecretString::from(client_secret.to_owned())),
            client_secret_file: None,
            scope: None,
        }
    }

    pub fn client_secret(&self) -> Result<SecretString, ConfigError> {
        resolve_secret(
            "bureau.oauth2.client_secret",
            &self.client_secret,
            &self.client_secret_file,
        )
    }
}

impl BureauSettings {
    /// For tests and tools that build settings in code.
    pub fn set_api_key(&mut self, key: impl Into<String>) {
        self.api_key = Some(SecretString::from(key.into()));
        self.api_key_file = None;
    }

    /// The API key, if one is configured: without it every pull fails `bureau_not_configured`.
    pub fn api_key(&self) -> Result<Option<SecretString>, ConfigError> {
        if self.api_key.is_none() && self.api_key_file.is_none() {
            return Ok(None);
        }
        resolve_secret("bureau.api_key", &self.api_key, &self.api_key_file).map(Some)
    }
}

/// A circuit breaker: open when at least `min_requests` calls in the last `window_secs`
/// failed at `failure_rate` or more; half-open after `open_secs` (one probe at a time).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    pub window_secs: u64,
    pub min_requests: u32,
    pub failure_rate: f64,
    pub open_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentSettings {
    pub max_upload_bytes: u64,
    pub upload_url_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub roles_claim: String,
    pub team_claim: String,
    pub algorithms: Vec<String>,
    pub leeway_secs: u64,
    pub mfa_amr: Vec<String>,
    pub mfa_acr: Vec<String>,
    pub step_up_max_age_secs: u64,
    pub session_ttl_secs: u64,
    /// A session's rights are checked again at most this often (disabled agent, refresh).
    pub session_recheck_secs: u64,
    /// While the provider cannot be reached a session lives on this long, then ends.
    pub recheck_grace_secs: u64,
    pub cookie_secure: bool,
    pub jwks_min_refresh_secs: u64,
    pub jwks_max_age_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub api_per_ip: u32,
    pub api_per_principal: u32,
    pub public_per_ip: u32,
    pub public_per_token: u32,
    pub auth_per_ip: u32,
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySettings {
    pub ttl_hours: u64,
    pub in_flight_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Serve HTTPS (rustls) with this PEM certificate chain and key; both or neither.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub listen: SocketAddr,
    /// `/metrics` and the detailed `/readyz` of `loanfolio serve`.
    pub admin_listen: SocketAddr,
    pub public_base_url: url::Url,
    pub request_timeout_secs: u64,
    pub body_limit_bytes: usize,
    pub shutdown_grace_secs: u64,
    /// The whole request head must arrive within this; idle keep-alive connections close
    /// after it too.
    pub header_read_timeout_secs: u64,
}

impl ServerSettings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// `/healthz`, `/readyz` and `/metrics` of `loanfolio worker`.
    pub admin_listen: SocketAddr,
    /// The queue consumers and schedulers this process runs (`document-pipeline`,
    /// `credit-worker`, `los-submitter`, `notifier`, `reminder-scheduler`); absent: all.
    pub consumers: Option<Vec<String>>,
}

impl WorkerSettings {
    pub fn runs(&self, consumer: &str) -> bool {
        self.consumers
            .as_ref()
            .is_none_or(|list| list.iter().any(|c| c == consumer))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `loanfolio=debug,info`.
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `disable`, `prefer`, `require`, `verify-ca` or `verify-full` (libpq's names);
    /// unset: the URL's `sslmode`, else `prefer`. Production: `verify-full` with `ca_file`.
    pub ssl_mode: Option<String>,
    /// A PEM bundle of the CA(s) the server's certificate is verified against (TLS in
    /// transit, docs/security.md): trusted alone, not beside the system's roots — except by the
    /// S3 object client and RabbitMQ, which add it to them.
    pub ca_file: Option<PathBuf>,
    url: Option<SecretString>,
    url_file: Option<PathBuf>,
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub statement_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqSettings {
    /// For an `amqps://` URL: a PEM bundle of the CA(s) the broker's certificate is
    /// verified against, added to the system's roots (TLS in transit, docs/security.md).
    pub ca_file: Option<PathBuf>,
    url: Option<SecretString>,
    url_file: Option<PathBuf>,
    /// Prefix of every exchange and queue this installation declares; lets several
    /// installations (or test runs) share one vhost.
    pub prefix: String,
    pub connect_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// For a `rediss://` URL: a PEM bundle of the CA(s) the server's certificate is
    /// verified against, trusted alone (TLS in transit, docs/security.md).
    pub ca_file: Option<PathBuf>,
    url: Option<SecretString>,
    url_file: Option<PathBuf>,
    pub key_prefix: String,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// A PEM bundle of the CA(s) the server's certificate is verified against (TLS in
    /// transit, docs/security.md): trusted alone, not beside the system's roots — except by the
    /// S3 object client and RabbitMQ, which add it to them.
    pub ca_file: Option<PathBuf>,
    pub endpoint: url::Url,
    /// Where browsers send pre-signed uploads, when not `endpoint`.
    pub public_endpoint: Option<url::Url>,
    pub region: String,
    pub access_key_id: String,
    secret_access_key: Option<SecretString>,
    secret_access_key_file: Option<PathBuf>,
    pub quarantine_bucket: String,
    pub documents_bucket: String,
    /// Plain-HTTP endpoints are for local development only.
    pub allow_http: bool,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClamdSettings {
    /// `host:port` of clamd's TCP socket.
    pub address: String,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// A PEM bundle of the CA(s) the server's certificate is verified against (TLS in
    /// transit, docs/security.md): trusted alone, not beside the system's roots — except by the
    /// S3 object client and RabbitMQ, which add it to them.
    pub ca_file: Option<PathBuf>,
    /// The issuer identifier; discovery is `{issuer}/.well-known/openid-configuration`.
    pub issuer_url: url::Url,
    pub audience: String,
    pub timeout_secs: u64,
    pub client_id: String,
    client_secret: Option<SecretString>,
    client_secret_file: Option<PathBuf>,
}

impl OidcSettings {
    /// The browser-login client secret, if browser login is configured.
    pub fn client_secret(&self) -> Result<Option<SecretString>, ConfigError> {
        if self.client_secret.is_none() && self.client_secret_file.is_none() {
            return Ok(None);
        }
        resolve_secret(
            "oidc.client_secret",
            &self.client_secret,
            &self.client_secret_file,
        )
        .map(Some)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KmsProvider {
    Local,
    Vault,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsSettings {
    pub provider: KmsProvider,
    pub local: LocalKmsSettings,
    pub vault: VaultKmsSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalKmsSettings {
    /// A file of 32 random bytes with mode 0600; see `crypto::local`.
    pub master_key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultKmsSettings {
    /// A PEM bundle of the CA(s) the server's certificate is verified against (TLS in
    /// transit, docs/security.md): trusted alone, not beside the system's roots — except by the
    /// S3 object client and RabbitMQ, which add it to them.
    pub ca_file: Option<PathBuf>,
    pub address: url::Url,
    token: Option<SecretString>,
    token_file: Option<PathBuf>,
    /// AppRole instead of a token: files holding the role id and the secret id (both, or
    /// neither). The service logs in, renews its token before it expires and logs in again
    /// when renewal fails.
    pub role_id_file: Option<PathBuf>,
    pub secret_id_file: Option<PathBuf>,
    /// Where the AppRole auth method is mounted.
    pub approle_mount: String,
    pub transit_mount: String,
    pub key_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadinessSettings {
    /// Each dependency check gives up after this long and reports the dependency down.
    pub check_timeout_ms: u64,
    /// Dependency results are reused this long (single flight while one check runs).
    pub cache_ms: u64,
    /// Calls per second per client address to the public `/readyz`.
    pub public_per_ip: u32,
}

impl ReadinessSettings {
    pub fn check_timeout(&self) -> Duration {
        Duration::from_millis(self.check_timeout_ms)
    }
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
        if let Err(e) = crate::workers::reminders::Schedule::from_settings(&self.reminders) {
            return Err(ConfigError::Invalid(format!("{e:#}")));
        }
        self.database.url()?;
        self.rabbitmq.url()?;
        self.redis.url()?;
        self.s3.secret_access_key()?;
        self.oidc.client_secret()?;
        self.los.webhook_secrets()?;
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
fn resolve_secret(
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

/// A connection URL with its password (and any user info) replaced, for messages.
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("REDACTED"));
                }
                // Query strings can carry passwords too (`?password=`, `sslpassword=`).
                if url.query().is_some() {
                    url.set_query(Some("REDACTED"));
                }
                write!(f, "{url}")
            }
            Err(_) => f.write_str("<unparseable url>"),
        }
    }
}

#[cfg(test)]
// figment::Jail's closures return figment's large error type; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    /// The secrets `config/default.toml` deliberately leaves unset.
    fn set_required_secrets(jail: &mut figment::Jail) {
        jail.set_env("LOANFOLIO__DATABASE__URL", "postgres://u@h/db");
        jail.set_env("LOANFOLIO__RABBITMQ__URL", "amqp://u:p@h:5672/%2f");
        jail.set_env("LOANFOLIO__REDIS__URL", "redis://h:6379/0");
        jail.set_env("LOANFOLIO__S3__SECRET_ACCESS_KEY", "s3-secret");
    }

    fn load(jail_extra: Option<&str>) -> Result<Settings, ConfigError> {
        Settings::load_from(
            jail_extra.map(Path::new),
            Env::prefixed(ENV_PREFIX).split("__"),
        )
    }

    #[test]
    fn defaults_need_only_the_secrets() {
        figment::Jail::expect_with(|jail| {
            let err = load(None).expect_err("no database url");
            assert!(err.to_string().contains("database.url"), "{err}");
            set_required_secrets(jail);
            let settings = load(None).expect("defaults plus secrets are valid");
            assert_eq!(settings.kms.provider, KmsProvider::Local);
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_named() {
        figment::Jail::expect_with(|jail| {
            set_required_secrets(jail);
            jail.set_env("LOANFOLIO__DATABASE__MAX_CONECTIONS", "5");
            let err = load(None).expect_err("typo must fail");
            let message = err.to_string();
            assert!(message.contains("max_conections"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn env_overrides_file() {
        figment::Jail::expect_with(|jail| {
            set_required_secrets(jail);
            jail.set_env("LOANFOLIO__SERVER__REQUEST_TIMEOUT_SECS", "7");
            let settings = load(None).unwrap();
            assert_eq!(settings.server.request_timeout_secs, 7);
            Ok(())
        });
    }

    #[test]
    fn secret_from_file_but_not_both() {
        figment::Jail::expect_with(|jail| {
            set_required_secrets(jail);
            jail.create_file("db-url", "postgres://u:file-secret@h/db\n")?;
            jail.set_env("LOANFOLIO__DATABASE__URL_FILE", "db-url");
            let err = load(None).expect_err("both given");
            assert!(err.to_string().contains("database.url"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            set_required_secrets(jail);
            jail.set_env("LOANFOLIO__DATABASE__URL", "");
            jail.create_file("db-url", "postgres://u:file-secret@h/db\n")?;
            jail.create_file("site.toml", "[database]\nurl_file = \"db-url\"\n")?;
            let err = load(Some("site.toml")).expect_err("empty inline and a file");
            assert!(err.to_string().contains("database.url"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            set_required_secrets(jail);
            jail.clear_env();
            jail.set_env("LOANFOLIO__RABBITMQ__URL", "amqp://u:p@h:5672/%2f");
            jail.set_env("LOANFOLIO__REDIS__URL", "redis://h:6379/0");
            jail.set_env("LOANFOLIO__S3__SECRET_ACCESS_KEY", "s3-secret");
            jail.create_file("db-url", "postgres://u:file-secret@h/db\n")?;
            jail.create_file("site.toml", "[database]\nurl_file = \"db-url\"\n")?;
            let settings = load(Some("site.toml")).unwrap();
            assert_eq!(
                settings.database.url().unwrap().expose_secret(),
                "postgres://u:file-secret@h/db"
            );
            Ok(())
        });
    }

    /// Defect: an empty inline webhook secret was accepted — an HMAC anyone can compute.
    #[test]
    fn empty_webhook_secrets_are_refused_at_start() {
        figment::Jail::expect_with(|jail| {
            set_required_secrets(jail);
            jail.create_file("site.toml", "[los]\nwebhook_secrets = [\"ok\", \"\"]\n")?;
            let err = load(Some("site.toml")).expect_err("an empty secret");
            assert!(err.to_string().contains("los.webhook_secrets"), "{err}");
            jail.create_file("site.toml", "[los]\nwebhook_secrets = [\"ok\"]\n")?;
            assert!(load(Some("site.toml")).is_ok());
            Ok(())
        });
    }

    #[test]
    fn secrets_never_in_debug() {
        figment::Jail::expect_with(|jail| {
            set_required_secrets(jail);
            jail.set_env(
                "LOANFOLIO__DATABASE__URL",
                "postgres://u:canary-pw-123@h/db",
            );
            let settings = load(None).unwrap();
            let debug = format!("{settings:?}");
            assert!(!debug.contains("canary-pw-123"), "{debug}");
            Ok(())
        });
    }

    #[test]
    fn redacts_passwords_in_urls() {
        let shown = Redacted("postgres://user:hunter2@db:5432/app?sslpassword=x").to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("sslpassword=x"), "{shown}");
        assert!(shown.contains("db:5432"), "{shown}");
    }
}
