//! Browser login (docs/security.md, "Sessions"): `/auth/login`, `/auth/reauth`,
//! `/auth/callback`, `/auth/session`, `/auth/logout`, and the provider's
//! `/auth/backchannel-logout`. Sign-in, sign-out, failed callbacks, step-ups and ended
//! sessions are audited (entity_type `session`; no PII).

use std::time::Duration;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::session_event as audit_session;
use crate::auth::{Actor, AuthError, session};
use crate::error::{AppError, AppJson, ErrorCode};
use crate::http::auth::login::{self, Purpose};
use crate::http::auth::middleware::{SessionContext, cookie_value};
use crate::http::auth::recheck::seal_refresh_token;
use crate::http::edge::RequestId;
use crate::state::AppState;

pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(begin_login))
        .routes(routes!(begin_reauth))
        .routes(routes!(callback))
        .routes(routes!(backchannel_logout))
}

pub fn session_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(current_session))
        .routes(routes!(logout))
}

/// How long the pre-login cookie (and the login it binds) lives.
const LOGIN_TTL: Duration = Duration::from_secs(600);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoginParams {
    /// A local path to return to after login (default `/`).
    return_to: Option<String>,
}

fn cookie(state: &AppState, name: &'static str, value: String, max_age: Duration) -> HeaderValue {
    let cookie = Cookie::build((name, value))
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

fn session_cookie(state: &AppState, value: String, max_age: Duration) -> HeaderValue {
    let name = session::cookie_name(state.settings.auth.cookie_secure);
    cookie(state, name, value, max_age)
}

fn login_cookie(state: &AppState, value: String, max_age: Duration) -> HeaderValue {
    let name = session::login_cookie_name(state.settings.auth.cookie_secure);
    cookie(state, name, value, max_age)
}

/// Redirect to the provider, with the pre-login cookie that binds the login to this browser.
async fn to_provider(
    state: &AppState,
    return_to: Option<&str>,
    purpose: Purpose,
) -> Result<Response, AppError> {
    let (url, binding) = login::begin(state, return_to, purpose).await?;
    let mut response = Redirect::to(&url).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, login_cookie(state, binding, LOGIN_TTL));
    Ok(response)
}

/// Start a browser login: redirects to the identity provider (authorization code + PKCE).
#[utoipa::path(get, path = "/auth/login", tag = "sessions", params(LoginParams),
    responses((status = 303, description = "To the identity provider; sets the short-lived pre-login cookie")))]
async fn begin_login(
    State(state): State<AppState>,
    Query(params): Query<LoginParams>,
) -> Result<Response, AppError> {
    to_provider(&state, params.return_to.as_deref(), Purpose::SignIn).await
}

/// Step-up: sign in again at the provider (`prompt=login`, `max_age=0`) whatever its own
/// session, for an operation that needs a recent authentication (401 `step_up_required`
/// carries this URL as `reauth_url`).
#[utoipa::path(get, path = "/auth/reauth", tag = "sessions", params(LoginParams),
    responses((status = 303, description = "To the identity provider, asking for a fresh authentication")))]
async fn begin_reauth(
    State(state): State<AppState>,
    Query(params): Query<LoginParams>,
) -> Result<Response, AppError> {
    to_provider(&state, params.return_to.as_deref(), Purpose::StepUp).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackParams {
    /// The authorization code (the provider omits it when it reports an `error`).
    #[param(required = true)]
    code: Option<String>,
    /// The state the login was started with.
    #[param(required = true)]
    state: Option<String>,
    /// The provider's error code, when the login failed there.
    error: Option<String>,
}

fn anonymous() -> Actor {
    Actor::borrower("anonymous".to_owned())
}

/// Count a failed callback; audit it (`session.login_failed`, its entity the login attempt)
/// when it answered a login this service started.
async fn login_failed(
    state: &AppState,
    reason: &'static str,
    csrf_state: &str,
    started: bool,
    request_id: &str,
) {
    state
        .metrics
        .login_failures
        .get_or_create(&crate::metrics::OutcomeLabels {
            outcome: reason.to_owned(),
        })
        .inc();
    if !started {
        tracing::info!(reason, "a callback for no login of ours was refused");
        return;
    }
    let result = async {
        let mut tx = state.db.begin().await?;
        audit_session(
            &mut tx,
            &anonymous(),
            "session.login_failed",
            &session::hash_id(csrf_state),
            Some(request_id),
            json!({ "reason": reason }),
        )
        .await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "a failed sign-in could not be audited");
    }
    tracing::info!(reason, "a sign-in failed");
}

/// The identity provider returns here; on success a session cookie is set. The login must
/// finish in the browser that started it (the pre-login cookie), else 401.
#[utoipa::path(get, path = "/auth/callback", tag = "sessions", params(CallbackParams),
    responses(
        (status = 303, description = "Signed in; to the page the login started from"),
        (status = 400, description = "Neither a code nor an error", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "The login failed, expired, or was started in another browser", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "No MFA, no role, or a disabled account", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn callback(
    State(state): State<AppState>,
    request_id: RequestId,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Result<Response, AppError> {
    let csrf_state = params.state.clone().unwrap_or_default();
    if params.error.is_some() {
        let started = login::abandon(&state, &csrf_state).await;
        login_failed(
            &state,
            "provider_error",
            &csrf_state,
            started,
            &request_id.0,
        )
        .await;
        return Err(AuthError::SessionExpired.into());
    }
    let (Some(code), Some(csrf_state)) = (params.code, params.state) else {
        return Err(AppError::client(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedRequest,
            "the callback needs `code` and `state`",
        ));
    };
    let secure = state.settings.auth.cookie_secure;
    let binding = cookie_value(&headers, session::login_cookie_name(secure));
    let finished = match login::finish(&state, &code, &csrf_state, binding.as_deref()).await {
        Ok(finished) => finished,
        Err(failed) => {
            login_failed(
                &state,
                failed.reason,
                &csrf_state,
                failed.started,
                &request_id.0,
            )
            .await;
            return Err(failed.error);
        }
    };
    let ttl = Duration::from_secs(state.settings.auth.session_ttl_secs);
    let (id, actor) = start_session(&state, &finished, ttl).await?;
    // A session the browser already had is replaced, never kept beside the new one.
    if let Some(previous) = cookie_value(&headers, session::cookie_name(secure)) {
        session::revoke(&state.db, &state.cache, &previous).await?;
    }
    let action = match finished.purpose {
        Purpose::SignIn => "session.signed_in",
        Purpose::StepUp => "session.stepped_up",
    };
    let mut tx = state.db.begin().await?;
    audit_session(
        &mut tx,
        &actor,
        action,
        &session::hash_id(&id),
        Some(&request_id.0),
        json!({ "refresh_token": finished.refresh_token.is_some() }),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(subject = %actor.subject, action, "signed in");
    let mut response = Redirect::to(&finished.return_to).into_response();
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, session_cookie(&state, id, ttl));
    headers.append(
        header::SET_COOKIE,
        login_cookie(&state, String::new(), Duration::ZERO),
    );
    Ok(response)
}

/// The session a finished login opens (its refresh token sealed): its id and actor.
async fn start_session(
    state: &AppState,
    finished: &login::Finished,
    ttl: Duration,
) -> Result<(String, Actor), AppError> {
    let actor = finished.actor.clone();
    let refresh_token_enc = match &finished.refresh_token {
        Some(token) => Some(seal_refresh_token(state, &actor.subject, token).await?),
        None => None,
    };
    let (id, _) = session::create(
        &state.db,
        &state.cache,
        &actor,
        ttl,
        session::Origin {
            refresh_token_enc,
            provider_sid: finished.provider_sid.clone(),
        },
    )
    .await?;
    Ok((id, actor))
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
        (status = 401, description = "No session", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing CSRF token", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn logout(
    State(state): State<AppState>,
    request_id: RequestId,
    context: Option<Extension<SessionContext>>,
) -> Result<Response, AppError> {
    let Extension(context) = context.ok_or(AuthError::SessionExpired)?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        sign_out(&state, &context, &request_id.0).await?,
    );
    Ok(response)
}

/// End the session of `context` (audited `session.signed_out`); the `Set-Cookie` value that
/// clears the browser's cookie. The console's sign-out form uses it too.
pub async fn sign_out(
    state: &AppState,
    context: &SessionContext,
    request_id: &str,
) -> Result<HeaderValue, AppError> {
    let id_hash = session::hash_id(&context.id);
    let mut tx = state.db.begin().await?;
    sqlx::query!("delete from sessions where id_hash = $1", &id_hash)
        .execute(&mut *tx)
        .await?;
    audit_session(
        &mut tx,
        &context.session.actor,
        "session.signed_out",
        &id_hash,
        Some(request_id),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    session::revoke(&state.db, &state.cache, &context.id).await?;
    Ok(session_cookie(state, String::new(), Duration::ZERO))
}

/// Record a logout token's `jti` for ten minutes (longer than a logout token is accepted);
/// false when it was seen already. Without Redis the token is accepted: replaying a
/// logout ends nothing that was not ended already.
async fn first_use_of(state: &AppState, jti: &str) -> bool {
    let key = state.cache.key(&format!(
        "logout-jti:{}",
        session::hash_id(jti)[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let result = async {
        let mut connection = state.cache.connection().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(600)
            .query_async(&mut connection)
            .await?;
        anyhow::Ok(set.is_some())
    }
    .await;
    result.unwrap_or(true)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LogoutToken {
    /// A logout token (OpenID Connect Back-Channel Logout 1.0, §2.4).
    logout_token: String,
}

/// OpenID Connect Back-Channel Logout 1.0: the provider ends a user's sessions (by `sub`)
/// or one provider session (by `sid`). The logout token is verified like an ID token.
#[utoipa::path(post, path = "/auth/backchannel-logout", tag = "sessions",
    request_body(content = LogoutToken, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The sessions are ended"),
        (status = 400, description = "Not a valid logout token", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn backchannel_logout(
    State(state): State<AppState>,
    request_id: RequestId,
    form: Result<axum::Form<LogoutToken>, axum::extract::rejection::FormRejection>,
) -> Result<Response, AppError> {
    let invalid = |detail: &str| {
        AppError::client(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            detail.to_owned(),
        )
    };
    let axum::Form(form) = form.map_err(|_| invalid("send logout_token as a form field"))?;
    if form.logout_token.len() > 16 * 1024 {
        return Err(invalid("the logout token is too long"));
    }
    let claims = state
        .verifier
        .verify_logout(&form.logout_token, &state.settings.oidc.client_id)
        .await
        .map_err(|e| match e {
            AuthError::IssuerUnavailable(source) => AppError::DependencyUnavailable {
                dependency: "oidc",
                source,
            },
            other => {
                tracing::info!(error = %other, "a back-channel logout token was refused");
                invalid("the logout token is not valid")
            }
        })?;
    // Each logout token works once (§2.6: its `jti`); a replay is refused.
    if !first_use_of(&state, &claims.jti).await {
        return Err(invalid("the logout token was used before"));
    }
    // A `sid` ends that provider session (and, with a `sub`, that user's sessions that
    // recorded no provider session); a `sub` alone ends all of the user's.
    let (by_subject, by_sid) = (claims.sub.as_deref(), claims.sid.as_deref());
    let actor = Actor::borrower("system:backchannel-logout".to_owned());
    let mut tx = state.db.begin().await?;
    let ended = session::delete_all(&mut tx, by_subject, by_sid).await?;
    for session in &ended {
        audit_session(
            &mut tx,
            &actor,
            "session.ended",
            &session.id_hash,
            Some(&request_id.0),
            json!({ "reason": "backchannel_logout" }),
        )
        .await?;
    }
    tx.commit().await?;
    // Every Redis copy of the subject's only when all of them ended.
    let whole_subject = if by_sid.is_none() { by_subject } else { None };
    session::uncache(&state.cache, &ended, whole_subject).await;
    tracing::info!(sessions = ended.len(), "back-channel logout");
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
