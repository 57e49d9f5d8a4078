//! Composition root: `Settings` → `AppState` (pools and clients, none of which connects
//! before it is used) → a listening `Application`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use sqlx::PgPool;
use tokio::net::TcpListener;

use std::time::Duration;

use crate::auth::agents::Provisioned;
use crate::auth::discovery::Discovery;
use crate::auth::jwks::JwksCache;
use crate::auth::token::TokenVerifier;
use crate::cache::Cache;
use crate::config::Settings;
use crate::crypto::Kms;
use crate::crypto::keyring::KeyRing;
use crate::metrics::Metrics;
use crate::queue::Broker;
use crate::ratelimit::RateLimiter;
use crate::readiness::Transitions;
use crate::scan::Clamd;
use crate::storage::Storage;
use crate::{db, http};

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
    pub mailer: Arc<crate::notify::Mailer>,
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
                crate::notify::Mailer::new(&settings.notifications).context("notifications")?,
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

pub struct Application {
    listener: TcpListener,
    /// `serve`'s operations listener (`server.admin_listen`); `worker` has only one.
    admin: Option<TcpListener>,
    state: AppState,
    router: axum::Router,
    workers: bool,
}

impl Application {
    /// Bind the role's listener (port 0 picks a free port) and build the router.
    pub async fn build(settings: Settings, role: Role) -> anyhow::Result<Self> {
        let address = match role {
            Role::Serve => settings.server.listen,
            Role::Worker => settings.worker.admin_listen,
        };
        let state = AppState::new(settings, role)?;
        Self::with_state(state, address).await
    }

    pub async fn with_state(state: AppState, address: SocketAddr) -> anyhow::Result<Self> {
        let router = match state.role {
            Role::Serve => http::router(state.clone()),
            Role::Worker => http::ops_router(state.clone()),
        };
        Self::with_router(state, address, router).await
    }

    /// Serve `router` (already finished with [`http::finish`]) instead of the role's own;
    /// the test suite mounts test-only routes this way.
    pub async fn with_router(
        state: AppState,
        address: SocketAddr,
        router: axum::Router,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let admin = match state.role {
            Role::Serve => {
                let admin_address = state.settings.server.admin_listen;
                Some(
                    TcpListener::bind(admin_address)
                        .await
                        .with_context(|| format!("binding server.admin_listen {admin_address}"))?,
                )
            }
            Role::Worker => None,
        };
        if state.keys.kms.provider_name() == "local" {
            tracing::warn!(
                "running on the `local` key provider: a master key file, not Vault; for development, tests and very small installs only"
            );
        }
        Ok(Self {
            listener,
            admin,
            state,
            router,
            workers: false,
        })
    }

    /// Also run the background workers (the outbox relay; consumers arrive with the
    /// capabilities that need them).
    pub fn with_workers(mut self, workers: bool) -> Self {
        self.workers = workers;
        self
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The operations listener's port (`serve`), else the main one (`worker`).
    pub fn admin_port(&self) -> u16 {
        self.admin
            .as_ref()
            .unwrap_or(&self.listener)
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until `shutdown` resolves, then stop accepting, let in-flight requests finish
    /// for up to `server.shutdown_grace_secs`, and close the clients.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            admin,
            state,
            router,
            workers,
        } = self;
        let grace = state.settings.server.shutdown_grace();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tracing::info!(
            role = state.role.as_str(),
            address = %listener.local_addr()?,
            admin_address = ?admin.as_ref().and_then(|a| a.local_addr().ok()),
            expected_schema = db::expected_version(),
            "listening"
        );
        let tls = match (
            &state.role,
            &state.settings.server.tls_cert_file,
            &state.settings.server.tls_key_file,
        ) {
            (Role::Serve, Some(cert), Some(key)) => {
                let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .context("server.tls_cert_file / tls_key_file")?;
                // The listeners speak HTTP/1.1 only: never offer h2 in ALPN.
                let mut inner = (*config.get_inner()).clone();
                inner.alpn_protocols = vec![b"http/1.1".to_vec()];
                config.reload_from_config(Arc::new(inner));
                Some(config)
            }
            _ => None,
        };
        let header_timeout = Duration::from_secs(state.settings.server.header_read_timeout_secs);
        let mut server = serve(listener, router, tls, header_timeout, stop_rx.clone())?;
        let admin_server = match admin {
            Some(admin) => Some(serve(
                admin,
                http::ops_router(state.clone()),
                None,
                header_timeout,
                stop_rx.clone(),
            )?),
            None => None,
        };
        let housekeeping = tokio::spawn(crate::housekeeping::run(state.clone()));
        let relay = workers.then(|| tokio::spawn(crate::queue::relay::run(state.clone())));
        let reconciler =
            workers.then(|| tokio::spawn(crate::workers::reconciler::run(state.clone())));
        let credit = (workers && state.settings.worker.runs(crate::workers::credit::CONSUMER))
            .then(|| {
                tokio::spawn(crate::queue::consumer::run(
                    state.clone(),
                    Arc::new(crate::workers::credit::CreditWorker::new(state.clone())),
                    8,
                ))
            });
        let los =
            (workers && state.settings.worker.runs(crate::workers::los::CONSUMER)).then(|| {
                tokio::spawn(crate::queue::consumer::run(
                    state.clone(),
                    Arc::new(crate::workers::los::LosSubmitter::new(state.clone())),
                    8,
                ))
            });
        let notifier = (workers
            && state
                .settings
                .worker
                .runs(crate::workers::notifier::CONSUMER))
        .then(|| {
            tokio::spawn(crate::queue::consumer::run(
                state.clone(),
                Arc::new(crate::workers::notifier::Notifier::new(state.clone())),
                8,
            ))
        });
        let reminders = (workers
            && state.settings.reminders.enabled
            && state
                .settings
                .worker
                .runs(crate::workers::reminders::RUNNER))
        .then(|| tokio::spawn(crate::workers::reminders::run(state.clone())));
        let los_reconciliation = (workers
            && state.settings.worker.runs(crate::workers::los::CONSUMER))
        .then(|| tokio::spawn(crate::workers::los::run_reconciliation(state.clone())));
        let pipeline = (workers
            && state
                .settings
                .worker
                .runs(crate::workers::pipeline::CONSUMER))
        .then(|| {
            tokio::spawn(crate::queue::consumer::run(
                state.clone(),
                Arc::new(crate::workers::pipeline::DocumentPipeline::new(
                    state.clone(),
                )),
                4,
            ))
        });
        tokio::select! {
            result = &mut server => {
                result.context("server task")?.context("server")?;
            }
            () = shutdown => {
                tracing::info!("shutting down: no new connections; finishing in-flight requests");
                let _ = stop_tx.send(true);
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(result) => result.context("server task")?.context("server")?,
                    Err(_) => {
                        tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests outlived the grace period; closing them");
                        server.abort();
                    }
                }
            }
        }
        drop(stop_rx);
        if let Some(admin_server) = admin_server {
            admin_server.abort();
        }
        housekeeping.abort();
        for task in [
            relay,
            pipeline,
            credit,
            los,
            notifier,
            los_reconciliation,
            reminders,
            reconciler,
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
        state.broker.close().await;
        state.db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

type ServerTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Serve `router` on `listener` (HTTPS when `tls` is given) until `stop` turns true, then
/// finish in-flight requests. HTTP/1.1 only (the deployments' proxies speak it upstream;
/// protocol detection and HTTP/2 would each need timeouts of their own): a connection must
/// send its first request, and every later request head, within `header_timeout`, and an
/// idle keep-alive connection is closed after it (slowloris).
fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    header_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<ServerTask> {
    let make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        let _ = stop.wait_for(|stop| *stop).await;
        stopper.graceful_shutdown(None);
    });
    let listener = listener.into_std()?;
    Ok(match tls {
        // HTTPS with rustls (docs/security.md); the deployments also put a proxy in front.
        Some(config) => {
            let mut server = axum_server::from_tcp_rustls(listener, config)?
                .handle(handle)
                .http1_only()
                .first_request_timeout(header_timeout);
            server
                .http_builder()
                .http1()
                .header_read_timeout(header_timeout);
            tokio::spawn(server.serve(make_service))
        }
        None => {
            let mut server = axum_server::from_tcp(listener)?
                .handle(handle)
                .http1_only()
                .first_request_timeout(header_timeout);
            server
                .http_builder()
                .http1()
                .header_read_timeout(header_timeout);
            tokio::spawn(server.serve(make_service))
        }
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
