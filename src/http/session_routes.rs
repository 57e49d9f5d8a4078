//! Browser login: `/auth/login`, `/auth/callback`, `/auth/session`, `/auth/logout`.

use std::time::Duration;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::middleware::SessionContext;
use crate::auth::{AuthError, login, session};
use crate::error::{AppError, AppJson};

pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(begin_login))
        .routes(routes!(callback))
}

pub fn session_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(current_session))
        .routes(routes!(logout))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LoginParams {
    /// A local path to return to after login (default `/`).
    return_to: Option<String>,
}

/// Start a browser login: redirects to the identity provider (authorization code + PKCE).
#[utoipa::path(get, path = "/auth/login", tag = "sessions", params(LoginParams),
    responses((status = 303, description = "To the identity provider")))]
async fn begin_login(
    State(state): State<AppState>,
    Query(params): Query<LoginParams>,
) -> Result<Response, AppError> {
    let url = login::begin(&state, params.return_to.as_deref()).await?;
    Ok(Redirect::to(&url).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

fn session_cookie(state: &AppState, value: String, max_age: Duration) -> HeaderValue {
    let cookie = Cookie::build((session::COOKIE, value))
        .path("/")
        .http_only(true)
        .secure(state.settings.auth.cookie_secure)
        // Lax: the cookie comes back on the top-level redirect from the provider, never on
        // cross-site subrequests or form posts.
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64))
        .build();
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The identity provider returns here; on success a session cookie is set.
#[utoipa::path(get, path = "/auth/callback", tag = "sessions", params(CallbackParams),
    responses(
        (status = 303, description = "Signed in; to the page the login started from"),
        (status = 401, description = "The login failed or expired", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn callback(
    State(state): State<AppState>,
    Query(params): Query<CallbackParams>,
) -> Result<Response, AppError> {
    if params.error.is_some() {
        return Err(AuthError::SessionExpired.into());
    }
    let (Some(code), Some(csrf_state)) = (params.code, params.state) else {
        return Err(AppError::client(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            "the callback needs `code` and `state`",
        ));
    };
    let (actor, return_to) = login::finish(&state, &code, &csrf_state).await?;
    let ttl = Duration::from_secs(state.settings.auth.session_ttl_secs);
    let (id, _) = session::create(&state.db, &state.cache, &actor, ttl).await?;
    tracing::info!(subject = %actor.subject, "signed in");
    let mut response = Redirect::to(&return_to).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, id, ttl));
    Ok(response)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    subject: String,
    /// Send this as `X-CSRF-Token` on every cookie-authenticated POST, PATCH or DELETE.
    csrf_token: String,
    expires_at: String,
}

/// The current browser session and its CSRF token.
#[utoipa::path(get, path = "/auth/session", tag = "sessions",
    responses(
        (status = 200, description = "The session", body = SessionInfo),
        (status = 401, description = "No session", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn current_session(
    context: Option<Extension<SessionContext>>,
) -> Result<AppJson<SessionInfo>, AppError> {
    let Extension(context) = context.ok_or(AuthError::SessionExpired)?;
    let expires_at = time::OffsetDateTime::from_unix_timestamp(context.session.expires_at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    Ok(AppJson(SessionInfo {
        subject: context.session.actor.subject.clone(),
        csrf_token: context.session.csrf_token.clone(),
        expires_at,
    }))
}

/// End the browser session (needs the CSRF token).
#[utoipa::path(post, path = "/auth/logout", tag = "sessions",
    responses(
        (status = 204, description = "Signed out"),
        (status = 403, description = "Missing CSRF token", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn logout(
    State(state): State<AppState>,
    context: Option<Extension<SessionContext>>,
) -> Result<Response, AppError> {
    let Extension(context) = context.ok_or(AuthError::SessionExpired)?;
    session::revoke(&state.db, &state.cache, &context.id).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&state, String::new(), Duration::ZERO),
    );
    Ok(response)
}
