//! The HTTP edge: routes, and the middleware every request passes through.
//!
//! Order, outermost first: request id + span + access log + problem finishing + metrics →
//! security headers → panic catcher → timeout → body limit (at extraction) → router. Errors produced by
//! the inner layers (413, 408, axum's 405) are plain; the edge turns every error response
//! that is not already a problem document into one, so clients see one error format.

pub mod agents;
pub mod audit;
pub mod credit;
pub mod documents;
pub mod edge;
pub mod idempotency;
pub mod leads;
pub mod limits;
pub mod loans;
pub mod los;
pub mod me;
pub mod notifications;
pub mod openapi;
pub mod ops;
pub mod requests;
pub mod session_routes;
pub mod sms_consent;
pub mod support;
pub mod unsubscribe;
pub mod upload_links;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::error::AppError;

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
fn api(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(ops::public_routes())
        .merge(session_routes::public_routes())
        .merge(authenticated(state, session_routes::session_routes()))
        .merge(authenticated(state, me::routes()))
        .merge(authenticated(state, agents::routes()))
        .merge(authenticated(state, leads::routes(state)))
        .merge(authenticated(state, loans::routes(state)))
        .merge(authenticated(state, audit::routes()))
        .merge(authenticated(state, upload_links::agent_routes(state)))
        .merge(upload_links::public_routes())
        .merge(authenticated(state, documents::routes(state)))
        .merge(documents::public_routes())
        .merge(authenticated(state, requests::routes(state)))
        .merge(requests::public_routes())
        .merge(crate::web::routes())
        .merge(authenticated(state, credit::routes(state)))
        .merge(authenticated(state, los::agent_routes(state)))
        .merge(los::public_routes())
        .merge(authenticated(state, notifications::routes()))
        .merge(authenticated(state, sms_consent::routes()))
        .merge(unsubscribe::routes())
}

/// Agent routes: authentication (and the role checks it implies) runs only on matched
/// routes, so an unknown path is a 404 before any credentials are looked at.
pub fn authenticated(state: &AppState, routes: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    routes.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::auth::middleware::authenticate,
    ))
}

/// The `serve` role's router.
pub fn router(state: AppState) -> Router {
    let (router, mut openapi) = api(&state).split_for_parts();
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
                "method_not_allowed",
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
    AppError::client(StatusCode::NOT_FOUND, "not_found", "no such route")
}
