//! The HTTP edge: routes, and the middleware every request passes through.
//!
//! Order, outermost first: request id + span + access log + problem finishing + metrics →
//! security headers → panic catcher → timeout → body limit (at extraction) → router. Errors produced by
//! the inner layers (413, 408, axum's 405) are plain; the edge turns every error response
//! that is not already a problem document into one, so clients see one error format.

pub mod audit;
pub mod auth;
pub mod edge;
pub mod idempotency;
pub mod limits;
pub mod me;
pub mod openapi;
pub mod ops;
pub mod session_routes;
pub mod support;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::error::{AppError, ErrorCode};
use crate::state::AppState;

/// Agent routes: authentication (and the role checks it implies) runs only on matched
/// routes, so an unknown path is a 404 before any credentials are looked at.
pub fn authenticated(state: &AppState, routes: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    routes.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::middleware::authenticate,
    ))
}

/// The `serve` role's router around its documented routes (`app::api`): the OpenAPI
/// document completed and served, 405 for a method a route lacks, and the edge middleware.
pub fn serve_router(api: OpenApiRouter<AppState>, state: AppState) -> Router {
    let (router, mut openapi) = api.split_for_parts();
    openapi::complete(&mut openapi);
    let allowed = std::sync::Arc::new(allowed_methods(&openapi));
    let router = router
        .layer(axum::middleware::from_fn(move |request, next| {
            let allowed = allowed.clone();
            async move { method_check(&allowed, request, next).await }
        }))
        .layer(axum::Extension(std::sync::Arc::new(openapi)));
    finish(router, state)
}

/// Each documented path template with the methods the API answers on it.
fn allowed_methods(
    openapi: &utoipa::openapi::OpenApi,
) -> std::collections::HashMap<String, Vec<axum::http::Method>> {
    use axum::http::Method;
    openapi
        .paths
        .paths
        .iter()
        .map(|(path, item)| {
            let mut methods = Vec::new();
            for (method, operation) in [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ] {
                if operation.is_some() {
                    methods.push(method);
                }
            }
            if item.get.is_some() {
                methods.push(Method::HEAD);
            }
            (path.clone(), methods)
        })
        .collect()
}

/// A method the route does not have is 405 with `Allow`, before authentication and the
/// idempotency layer look at the request (they wrap each route's method router).
async fn method_check(
    allowed: &std::collections::HashMap<String, Vec<axum::http::Method>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let methods = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .and_then(|path| allowed.get(path.as_str()));
    match methods {
        Some(methods) if !methods.contains(request.method()) => {
            let allow = methods
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let mut response = AppError::client(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "the route does not support this method",
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            response
        }
        _ => next.run(request).await,
    }
}

/// The operations listener's router (`server.admin_listen` of `serve`, and `worker`'s
/// only listener): health, the detailed readiness report and metrics.
pub fn ops_router(state: AppState) -> Router {
    let (router, _) = OpenApiRouter::<AppState>::new()
        .merge(ops::admin_routes())
        .split_for_parts();
    finish(router, state)
}

/// Put the edge middleware (request id, logs, metrics, problem documents, security
/// headers, timeout, body limit) and the not-found fallback around `router`.
pub fn finish(router: Router<AppState>, state: AppState) -> Router {
    let body_limit = state.settings.server.body_limit_bytes;
    let timeout = state.settings.server.request_timeout();
    let set_header = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    router
        .fallback(not_found)
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    edge::edge,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    limits::per_ip,
                ))
                .layer(set_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .layer(set_header(header::X_FRAME_OPTIONS, "DENY"))
                .layer(set_header(header::REFERRER_POLICY, "no-referrer"))
                // API answers are data, never documents: nothing may load or run from
                // them. The borrower page sets its own policy.
                .layer(set_header(
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; frame-ancestors 'none'",
                ))
                .layer(set_header(
                    header::STRICT_TRANSPORT_SECURITY,
                    "max-age=31536000; includeSubDomains",
                ))
                .layer(set_header(header::CACHE_CONTROL, "no-store"))
                .layer(set_header(
                    HeaderName::from_static("cross-origin-resource-policy"),
                    "same-origin",
                ))
                .layer(CatchPanicLayer::custom(edge::panic_response))
                // Inner layers change the body type; the edge works on axum's `Body`.
                .map_response(|response: axum::http::Response<_>| {
                    response.map(axum::body::Body::new)
                })
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    timeout,
                ))
                // Enforced where the body is read (Json, Bytes…); uploads never pass here.
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(state)
}

async fn not_found() -> AppError {
    AppError::client(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
}
