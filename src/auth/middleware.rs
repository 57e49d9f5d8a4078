//! The authentication layer for agent routes: credentials → verified claims → MFA → roles →
//! per-principal rate limit → just-in-time agent → `Actor` in the request's extensions.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use subtle::ConstantTimeEq;

use super::session::{self, Session};
use super::token::VerifiedClaims;
use super::{Actor, AuthError, Role};
use crate::app::AppState;
use crate::config::AuthSettings;
use crate::error::AppError;

fn bearer_token(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// An `Actor` from verified claims, or why the caller may not proceed.
pub fn actor_from_claims(
    claims: &VerifiedClaims,
    settings: &AuthSettings,
) -> Result<Actor, AppError> {
    let amr = claims.strings("amr");
    let acr = claims.string("acr");
    let has_mfa = amr.iter().any(|m| settings.mfa_amr.contains(m))
        || acr.as_ref().is_some_and(|a| settings.mfa_acr.contains(a));
    if !has_mfa {
        return Err(AuthError::MfaRequired.into());
    }
    let mut roles: Vec<Role> = claims
        .strings(&settings.roles_claim)
        .iter()
        .filter_map(|r| Role::parse(r))
        .collect();
    roles.sort_by_key(|r| r.as_str());
    roles.dedup();
    if roles.is_empty() {
        return Err(AppError::forbidden());
    }
    let team = claims
        .path(&settings.team_claim)
        .and_then(|v| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            // Keycloak user attributes can arrive as one-element arrays.
            serde_json::Value::Array(items) => {
                items.first().and_then(|i| i.as_str()).map(str::to_owned)
            }
            _ => None,
        })
        .filter(|t| !t.is_empty());
    let display_name = claims
        .string("name")
        .or_else(|| claims.string("preferred_username"))
        .unwrap_or_else(|| claims.subject.clone());
    Ok(Actor {
        subject: claims.subject.clone(),
        display_name,
        email: claims.string("email"),
        roles,
        team,
        auth_time: claims.claims.get("auth_time").and_then(|v| v.as_i64()),
    })
}

/// The session behind a cookie-authenticated request.
#[derive(Debug, Clone)]
pub struct SessionContext {
    pub id: String,
    pub session: Session,
}

fn session_cookie(request: &Request) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == session::COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

enum Credentials {
    Bearer(String),
    Cookie {
        id: String,
        unsafe_method: bool,
        csrf_header: Option<String>,
    },
    None,
}

/// Cookie-authenticated changes carry the session's token in this header (the page reads
/// it from `GET /auth/session`); a cross-site form cannot.
pub const CSRF_HEADER: &str = "x-csrf-token";

pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    // Owned, so the future holds no reference to the (non-Sync) request across awaits.
    let credentials = if let Some(token) = bearer_token(&request) {
        Credentials::Bearer(token.to_owned())
    } else if let Some(id) = session_cookie(&request) {
        Credentials::Cookie {
            id,
            unsafe_method: !request.method().is_safe(),
            csrf_header: request
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    } else {
        Credentials::None
    };
    match authenticate_request(&state, credentials).await {
        Ok((actor, session)) => {
            tracing::Span::current().record("principal", actor.subject.as_str());
            request.extensions_mut().insert(actor);
            if let Some(session) = session {
                request.extensions_mut().insert(session);
            }
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

async fn authenticate_request(
    state: &AppState,
    credentials: Credentials,
) -> Result<(Actor, Option<SessionContext>), AppError> {
    let (actor, context) = match credentials {
        Credentials::None => return Err(AuthError::MissingCredentials.into()),
        Credentials::Bearer(token) => {
            let claims = state.verifier.verify(&token).await?;
            (actor_from_claims(&claims, &state.settings.auth)?, None)
        }
        Credentials::Cookie {
            id,
            unsafe_method,
            csrf_header,
        } => {
            let session = session::load(&state.db, &state.cache, &id)
                .await?
                .ok_or(AuthError::SessionExpired)?;
            if unsafe_method {
                let presented = csrf_header.unwrap_or_default();
                let matches: bool = presented
                    .as_bytes()
                    .ct_eq(session.csrf_token.as_bytes())
                    .into();
                if !matches {
                    return Err(AuthError::CsrfFailed.into());
                }
            }
            (session.actor.clone(), Some(SessionContext { id, session }))
        }
    };
    state
        .rate_limiter
        .check(
            "api:principal",
            &actor.subject,
            state.settings.rate_limit.api_per_principal,
        )
        .await
        .map_err(|retry_after_secs| AppError::RateLimited { retry_after_secs })?;
    state.agents.ensure(&state.db, &actor).await?;
    Ok((actor, context))
}

/// Handlers take the caller with `Extension<Actor>`; this alias documents the intent.
pub type CurrentActor = axum::Extension<Actor>;
