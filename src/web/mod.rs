//! The borrower upload page (docs/api.md `GET /u/{token}`): one HTML page, a stylesheet and
//! a script, embedded in the binary — many sites are air-gapped, so nothing comes from a
//! CDN. The page talks to the public API with the token from its own path. An unknown
//! token answers 404 and an expired or revoked link 410 — with the same page, which shows
//! the API's answer in words a borrower understands.

use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

const PAGE: &str = include_str!("assets/upload.html");
const STYLE: &str = include_str!("assets/upload.css");
const SCRIPT: &str = include_str!("assets/upload.js");

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .route("/assets/upload.css", get(style))
        .route("/assets/upload.js", get(script))
}

/// The page's Content-Security-Policy: its own script and style only, no inline code, and
/// network access to this service and the object storage the browser PUTs files to.
pub fn content_security_policy(state: &AppState) -> String {
    let s3 = &state.settings.s3;
    let storage = s3.public_endpoint.as_ref().unwrap_or(&s3.endpoint);
    let storage_origin = storage.origin().ascii_serialization();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' {storage_origin}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// The borrower's upload page (HTML).
#[utoipa::path(get, path = "/u/{token}", tag = "borrowers", params(("token" = String, Path)),
    responses(
        (status = 200, description = "The upload page", content_type = "text/html"),
        (status = 404, description = "No such link: the page, saying so", content_type = "text/html"),
        (status = 410, description = "The link expired or was revoked: the page, saying so", content_type = "text/html"),
    ))]
async fn page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let status = match state.db.acquire().await {
        Ok(mut conn) => {
            match crate::links::ops::active_link(&mut conn, &token, false).await {
                Ok(_) => StatusCode::OK,
                Err(crate::error::AppError::Client { status, .. }) => status,
                // The page asks the API itself; a database hiccup here must not hide it.
                Err(_) => StatusCode::OK,
            }
        }
        Err(_) => StatusCode::OK,
    };
    let csp = HeaderValue::from_str(&content_security_policy(&state))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, csp),
            // The token is in the URL: never send it on as a referrer, never cache the page.
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                HeaderName::from_static("x-robots-tag"),
                HeaderValue::from_static("noindex, nofollow"),
            ),
        ],
        PAGE,
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}
