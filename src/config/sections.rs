//! The settings' sections, one struct each, as `config/default.toml` lays them out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{ConfigError, resolve_secret};

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
    pub(super) auth_token: Option<SecretString>,
    pub(super) auth_token_file: Option<PathBuf>,
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
    pub(super) password: Option<SecretString>,
    pub(super) password_file: Option<PathBuf>,
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
    pub(super) api_key: Option<SecretString>,
    pub(super) api_key_file: Option<PathBuf>,
    /// Secrets accepted on webhook signatures; several during a rotation.
    #[serde(default)]
    webhook_secrets: Vec<SecretString>,
    /// A file with one accepted webhook secret per line (instead of `webhook_secrets`).
    pub(super) webhook_secrets_file: Option<PathBuf>,
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
    pub(super) api_key: Option<SecretString>,
    pub(super) api_key_file: Option<PathBuf>,
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
    pub(super) client_secret: Option<SecretString>,
    pub(super) client_secret_file: Option<PathBuf>,
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
    /// A browser session ends this long after its last request.
    pub idle_timeout_secs: u64,
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
    pub(super) url: Option<SecretString>,
    pub(super) url_file: Option<PathBuf>,
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
    pub(super) url: Option<SecretString>,
    pub(super) url_file: Option<PathBuf>,
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
    pub(super) url: Option<SecretString>,
    pub(super) url_file: Option<PathBuf>,
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
    pub(super) secret_access_key: Option<SecretString>,
    pub(super) secret_access_key_file: Option<PathBuf>,
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
    pub(super) client_secret: Option<SecretString>,
    pub(super) client_secret_file: Option<PathBuf>,
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
    pub(super) token: Option<SecretString>,
    pub(super) token_file: Option<PathBuf>,
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
