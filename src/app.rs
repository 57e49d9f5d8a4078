//! Composition root: `Settings` → `AppState` (crate::state) → a listening `Application`
//! with the role's router and background tasks.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Settings;
use crate::state::{AppState, Role};
use crate::{db, http};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Loanfolio API",
        description = "Leads, loan applications, borrower document collection, credit reports and LOS tracking for mortgage agents. Errors are application/problem+json (RFC 9457) with a stable `code`.",
        version = "1"
    ),
    components(schemas(crate::error::Problem, crate::error::FieldError)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An OIDC access token from the lender's identity provider",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every route with its OpenAPI description; `router()` and the `/openapi.json` document
/// come from this one list, so the document cannot miss a route.
pub fn api(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(http::ops::public_routes())
        .merge(http::session_routes::public_routes())
        .merge(http::authenticated(
            state,
            http::session_routes::session_routes(),
        ))
        .merge(http::authenticated(state, http::me::routes()))
        .merge(http::authenticated(state, crate::agents::http::routes()))
        .merge(http::authenticated(
            state,
            crate::leads::http::routes(state),
        ))
        .merge(http::authenticated(
            state,
            crate::loans::http::routes(state),
        ))
        .merge(http::authenticated(state, http::audit::routes()))
        .merge(http::authenticated(
            state,
            crate::links::http::agent_routes(state),
        ))
        .merge(crate::links::http::public_routes())
        .merge(http::authenticated(
            state,
            crate::documents::http::routes(state),
        ))
        .merge(http::authenticated(
            state,
            crate::requests::http::routes(state),
        ))
        .merge(crate::web::routes())
        .merge(crate::web::console::routes(state))
        .merge(http::authenticated(
            state,
            crate::leads::credit::http::routes(state),
        ))
        .merge(http::authenticated(
            state,
            crate::los::http::agent_routes(state),
        ))
        .merge(crate::los::http::public_routes())
        .merge(http::authenticated(
            state,
            crate::notifications::http::routes(),
        ))
        .merge(http::authenticated(
            state,
            crate::notifications::http::sms_consent::routes(),
        ))
        .merge(crate::notifications::http::unsubscribe::routes())
        .merge(http::authenticated(
            state,
            crate::retention::http::routes(state),
        ))
}

/// The `serve` role's router.
pub fn router(state: AppState) -> axum::Router {
    http::serve_router(api(&state), state)
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
            Role::Serve => router(state.clone()),
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
        let tls = tls_config(&state).await?;
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
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(crate::admin::housekeeping::run(state.clone()));
        // Every process caches data keys, so every process hears disposals.
        tasks.spawn(crate::retention::disposal::forget_disposed_keys(
            state.clone(),
        ));
        if workers {
            for task in BACKGROUND_TASKS
                .iter()
                .filter(|task| (task.runs)(&state.settings))
            {
                tracing::debug!(task = task.name, "starting background task");
                tasks.spawn((task.start)(state.clone()));
            }
        }
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
        tasks.shutdown().await;
        state.broker.close().await;
        state.db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The API listener's TLS, when a serving process has a certificate and key configured.
async fn tls_config(
    state: &AppState,
) -> anyhow::Result<Option<axum_server::tls_rustls::RustlsConfig>> {
    let server = &state.settings.server;
    let (Role::Serve, Some(cert), Some(key)) =
        (&state.role, &server.tls_cert_file, &server.tls_key_file)
    else {
        return Ok(None);
    };
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .context("server.tls_cert_file / tls_key_file")?;
    // The listeners speak HTTP/1.1 only: never offer h2 in ALPN.
    let mut inner = (*config.get_inner()).clone();
    inner.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.reload_from_config(Arc::new(inner));
    Ok(Some(config))
}

type TaskFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A background task of a process that runs workers (`serve` without `--no-workers`, and
/// `worker`): its name (the one `worker.consumers` selects it by), whether this
/// configuration runs it, and how to start it.
struct BackgroundTask {
    name: &'static str,
    runs: fn(&Settings) -> bool,
    start: fn(AppState) -> TaskFuture,
}

/// Deliveries each queue consumer handles at once (its AMQP prefetch).
const DOCUMENT_PIPELINE_CONCURRENCY: u16 = 4;
const CREDIT_WORKER_CONCURRENCY: u16 = 8;
const LOS_SUBMITTER_CONCURRENCY: u16 = 8;
const NOTIFIER_CONCURRENCY: u16 = 8;

const BACKGROUND_TASKS: &[BackgroundTask] = &[
    BackgroundTask {
        name: "outbox-relay",
        runs: |_| true,
        start: |state| Box::pin(crate::queue::relay::run(state)),
    },
    BackgroundTask {
        name: "stuck-document-reconciler",
        runs: |_| true,
        start: |state| Box::pin(crate::documents::reconciler::run(state)),
    },
    BackgroundTask {
        name: crate::documents::worker::CONSUMER,
        runs: |settings| settings.worker.runs(crate::documents::worker::CONSUMER),
        start: |state| {
            let handler = Arc::new(crate::documents::worker::DocumentPipeline::new(
                state.clone(),
            ));
            Box::pin(crate::queue::consumer::run(
                state,
                handler,
                DOCUMENT_PIPELINE_CONCURRENCY,
            ))
        },
    },
    BackgroundTask {
        name: crate::leads::credit::worker::CONSUMER,
        runs: |settings| settings.worker.runs(crate::leads::credit::worker::CONSUMER),
        start: |state| {
            let handler = Arc::new(crate::leads::credit::worker::CreditWorker::new(
                state.clone(),
                crate::loans::ops::flag_open_loans,
            ));
            Box::pin(crate::queue::consumer::run(
                state,
                handler,
                CREDIT_WORKER_CONCURRENCY,
            ))
        },
    },
    BackgroundTask {
        name: crate::los::worker::CONSUMER,
        runs: |settings| settings.worker.runs(crate::los::worker::CONSUMER),
        start: |state| {
            let handler = Arc::new(crate::los::worker::LosSubmitter::new(state.clone()));
            Box::pin(crate::queue::consumer::run(
                state,
                handler,
                LOS_SUBMITTER_CONCURRENCY,
            ))
        },
    },
    BackgroundTask {
        name: "los-reconciliation",
        runs: |settings| settings.worker.runs(crate::los::worker::CONSUMER),
        start: |state| Box::pin(crate::los::worker::run_reconciliation(state)),
    },
    BackgroundTask {
        name: crate::notifications::worker::CONSUMER,
        runs: |settings| settings.worker.runs(crate::notifications::worker::CONSUMER),
        start: |state| {
            let handler = Arc::new(crate::notifications::worker::Notifier::new(state.clone()));
            Box::pin(crate::queue::consumer::run(
                state,
                handler,
                NOTIFIER_CONCURRENCY,
            ))
        },
    },
    BackgroundTask {
        name: crate::notifications::reminders::RUNNER,
        runs: |settings| {
            settings.reminders.enabled
                && settings
                    .worker
                    .runs(crate::notifications::reminders::RUNNER)
        },
        start: |state| Box::pin(crate::notifications::reminders::run(state)),
    },
    BackgroundTask {
        name: crate::retention::disposal::RUNNER,
        runs: |settings| {
            settings.retention.enabled && settings.worker.runs(crate::retention::disposal::RUNNER)
        },
        start: |state| Box::pin(crate::retention::disposal::run(state)),
    },
];

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
