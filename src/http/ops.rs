//! Operations routes: liveness, readiness, Prometheus metrics and the API description.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::readiness::{PublicReadiness, ReadinessReport};
use crate::state::AppState;

/// The operations listeners (`server.admin_listen`, `worker.admin_listen`): liveness, the
/// detailed readiness report and Prometheus metrics. Keep them off the public network.
pub fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The public listener's operations routes: liveness, a readiness report of names and
/// up/down only (cached, rate-limited per client), and the API description. `/metrics` is
/// not here: the public listener answers it 404.
pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(public_readyz))
        .routes(routes!(openapi_document))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
}

/// Liveness: the process answers. Never touches a dependency, so a database outage does
/// not get every replica restarted.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: every dependency by name; 503 only for what this role cannot work without,
/// or a schema that is not at this release's version.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to take traffic", body = ReadinessReport),
        (status = 503, description = "Not ready; the body says why", body = ReadinessReport),
    ))]
async fn readyz(State(state): State<AppState>) -> Response {
    let report = crate::state::readiness::cached(&state).await;
    let status = if report.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// Readiness for load balancers: every dependency by name, up or down, without reasons;
/// 503 only for what this role cannot work without, or a schema that is not at this
/// release's version. Answers come from a short cache; each client address may ask at most
/// `readiness.public_per_ip` times a second (trusted proxies are exempt).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to take traffic", body = PublicReadiness),
        (status = 429, description = "Asked too often", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not ready", body = PublicReadiness),
    ))]
async fn public_readyz(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, AppError> {
    // The client behind a trusted proxy is limited like any other; the proxy's own probe
    // (no forwarded client, so the client is the trusted peer itself) is not.
    let trusted = &state.settings.rate_limit.trusted_proxies;
    if let Some(client) = crate::http::limits::client_ip(&request, trusted)
        && !trusted.contains(&client)
    {
        state
            .rate_limiter
            .check(
                "readyz:ip",
                &crate::http::limits::rate_key(client),
                state.settings.readiness.public_per_ip,
            )
            .await
            .map_err(|retry_after_secs| AppError::RateLimited { retry_after_secs })?;
    }
    let report = crate::state::readiness::cached(&state).await;
    let status = if report.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(PublicReadiness::from(&report))).into_response())
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> Response {
    for (integration, level) in [
        ("bureau", state.bureau.breaker.state().level()),
        ("los", state.los.breaker.state().level()),
    ] {
        state
            .metrics
            .circuit_state
            .get_or_create(&crate::metrics::IntegrationLabels {
                integration: integration.into(),
            })
            .set(level);
    }
    // Installation-wide backlogs, read now and bounded by the readiness timeout: a
    // dependency that is down leaves the last value (its own `dependency_up` says why).
    let budget = state.settings.readiness.check_timeout();
    let outbox = sqlx::query!(
        r#"select count(*) as "count!",
                  coalesce(extract(epoch from now() - min(created_at))::float8, 0) as "oldest!"
             from outbox where published_at is null"#
    )
    .fetch_one(&state.db);
    if let Ok(Ok(backlog)) = tokio::time::timeout(budget, outbox).await {
        state.metrics.outbox_unpublished.set(backlog.count);
        state.metrics.outbox_oldest_unpublished.set(backlog.oldest);
    }
    let prefix = &state.settings.rabbitmq.prefix;
    for (consumer, _) in crate::events::SUBSCRIPTIONS {
        let depth = crate::queue::dlq::depth(&state.broker, prefix, consumer);
        if let Ok(Ok(n)) = tokio::time::timeout(budget, depth).await {
            state
                .metrics
                .dlq_messages
                .get_or_create(&crate::metrics::ConsumerLabels {
                    consumer: (*consumer).to_owned(),
                })
                .set(i64::from(n));
        }
    }
    let mut response = state.metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// This document (OpenAPI 3.1).
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json")))]
async fn openapi_document(Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>) -> Response {
    Json(doc.as_ref()).into_response()
}
