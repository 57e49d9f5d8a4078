//! `AppState`: what every handler, operation and background task reaches the outside world
//! through (pools and clients, none of which connects before it is used). Built once by the
//! composition root (`app`). A part that runs without the rest takes a sub-state made from
//! it: the queue consumers and the outbox relay take a `QueueContext` (below). No handler
//! needs less than the whole state today, so there is no `FromRef` sub-state yet.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;

use crate::auth::agents::Provisioned;
use crate::auth::discovery::Discovery;
use crate::auth::jwks::JwksCache;
use crate::auth::token::TokenVerifier;
use crate::cache::Cache;
use crate::config::Settings;
use crate::crypto::Kms;
use crate::crypto::keyring::KeyRing;
use crate::db;
use crate::metrics::Metrics;
use crate::queue::Broker;
use crate::ratelimit::RateLimiter;
use crate::readiness::Transitions;
use crate::scan::Clamd;
use crate::storage::Storage;

pub mod readiness;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The HTTP API and borrower page (plus the workers unless `--no-workers`).
    Serve,
    /// Queue consumers, outbox relay and schedulers, with an admin port.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Worker => "worker",
        }
    }
}

#[derive(Clone, Debug)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub role: Role,
    pub db: PgPool,
    pub broker: Arc<Broker>,
    pub cache: Arc<Cache>,
    pub storage: Storage,
    pub clamd: Clamd,
    pub oidc: Discovery,
    pub keys: Arc<KeyRing>,
    pub metrics: Arc<Metrics>,
    pub readiness_transitions: Arc<Transitions>,
    pub readiness_cache: Arc<crate::readiness::Cache>,
    pub verifier: Arc<TokenVerifier>,
    pub rate_limiter: Arc<RateLimiter>,
    pub agents: Arc<Provisioned>,
    pub bureau: Arc<crate::integrations::bureau::BureauClient>,
    pub los: Arc<crate::integrations::los::LosClient>,
    pub mailer: Arc<crate::mail::Mailer>,
    /// The LOS webhook's accepted secrets, loaded once (not on every request).
    pub webhook_keys: Arc<crate::integrations::webhook_signature::WebhookSecrets>,
}

impl AppState {
    /// Builds every client; connects to nothing.
    pub fn new(settings: Settings, role: Role) -> anyhow::Result<Self> {
        crate::tls::install_crypto_provider();
        let oidc = Discovery::new(&settings.oidc).context("oidc")?;
        let jwks = JwksCache::new(
            oidc.clone(),
            Duration::from_secs(settings.auth.jwks_min_refresh_secs),
            Duration::from_secs(settings.auth.jwks_max_age_secs),
        );
        let verifier = TokenVerifier::new(jwks, settings.oidc.audience.clone(), &settings.auth);
        let cache = Arc::new(Cache::new(&settings.redis).context("redis")?);
        Ok(Self {
            db: db::lazy_pool(&settings.database).context("database")?,
            broker: Arc::new(Broker::new(&settings.rabbitmq).context("rabbitmq")?),
            rate_limiter: Arc::new(RateLimiter::new(cache.clone())),
            cache,
            storage: Storage::new(&settings.s3).context("s3")?,
            clamd: Clamd::new(&settings.clamd),
            oidc,
            keys: Arc::new(KeyRing::new(Kms::new(&settings.kms))),
            metrics: Arc::new(Metrics::new()),
            readiness_transitions: Arc::default(),
            readiness_cache: Arc::default(),
            verifier: Arc::new(verifier),
            agents: Arc::default(),
            bureau: Arc::new(
                crate::integrations::bureau::BureauClient::new(&settings.bureau)
                    .context("bureau")?,
            ),
            los: Arc::new(crate::integrations::los::LosClient::new(&settings.los).context("los")?),
            mailer: Arc::new(
                crate::mail::Mailer::new(&settings.notifications).context("notifications")?,
            ),
            webhook_keys: Arc::new(
                crate::integrations::webhook_signature::WebhookSecrets::load(&settings.los)
                    .context("los")?,
            ),
            settings: Arc::new(settings),
            role,
        })
    }
}

impl AppState {
    /// The borrower file's data key (unwrapped by the key service, cached); the key
    /// service failing is 503 `dependency_unavailable` naming `kms`.
    pub async fn file_key(
        &self,
        lead: uuid::Uuid,
    ) -> Result<Arc<crate::crypto::DataKey>, crate::error::AppError> {
        self.keys.file_key(&self.db, lead).await.map_err(|e| {
            // A disposed file is gone for good, not a key-service outage.
            if crate::crypto::keyring::is_disposed(&e) {
                crate::error::AppError::not_found()
            } else {
                crate::error::kms_unavailable(e)
            }
        })
    }
}

impl From<AppState> for crate::queue::QueueContext {
    fn from(state: AppState) -> Self {
        Self {
            db: state.db,
            broker: state.broker,
            settings: state.settings,
        }
    }
}
