//! The authentication layer for agent routes: credentials → verified claims → MFA → roles →
//! per-principal rate limit → just-in-time agent → `Actor` in the request's extensions.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use subtle::ConstantTimeEq;

use crate::auth::session::{self, Session};
use crate::auth::token::VerifiedClaims;
use crate::auth::{Actor, AuthError, Role};
use crate::config::AuthSettings;
use crate::error::AppError;
use crate::state::AppState;

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
        issued_at: claims.claims.get("iat").and_then(|v| v.as_i64()),
    })
}

/// The session behind a cookie-authenticated request.
#[derive(Debug, Clone)]
pub struct SessionContext {
    pub id: String,
    pub session: Session,
}

/// The value of the cookie `name`, if the request carries it.
pub fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

enum Credentials {
    Bearer(String),
    Cookie {
        id: String,
        unsafe_method: bool,
        csrf_header: Option<String>,
        same_origin: bool,
    },
    None,
}

pub use crate::actor::SideEffects;

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
    } else if let Some(id) = cookie_value(
        request.headers(),
        session::cookie_name(state.settings.auth.cookie_secure),
    ) {
        Credentials::Cookie {
            id,
            unsafe_method: !request.method().is_safe(),
            csrf_header: request
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            same_origin: request
                .headers()
                .get("sec-fetch-site")
                .is_some_and(|v| v.as_bytes() == b"same-origin"),
        }
    } else {
        Credentials::None
    };
    let request_id = request
        .extensions()
        .get::<crate::telemetry::RequestId>()
        .map(|r| r.0.clone());
    match authenticate_request(&state, credentials, request_id.as_deref()).await {
        Ok((actor, session, side_effects)) => {
            tracing::Span::current().record("principal", actor.subject.as_str());
            request.extensions_mut().insert(actor);
            request.extensions_mut().insert(side_effects);
            if let Some(session) = session {
                request.extensions_mut().insert(session);
            }
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// A cookie session's request: the session, its re-check and idle timeout, the CSRF token
/// (`csrf`: from the header, or a console form's field), the agent's state and the rate
/// limit — what [`authenticate`] does for a cookie, for callers that read the token elsewhere.
pub async fn authenticate_cookie(
    state: &AppState,
    id: String,
    unsafe_method: bool,
    csrf: Option<String>,
    same_origin: bool,
    request_id: Option<&str>,
) -> Result<(Actor, SessionContext, SideEffects), AppError> {
    let credentials = Credentials::Cookie {
        id,
        unsafe_method,
        csrf_header: csrf,
        same_origin,
    };
    let (actor, context, side_effects) =
        authenticate_request(state, credentials, request_id).await?;
    let context = context.ok_or(AuthError::SessionExpired)?;
    Ok((actor, context, side_effects))
}

async fn authenticate_request(
    state: &AppState,
    credentials: Credentials,
    request_id: Option<&str>,
) -> Result<(Actor, Option<SessionContext>, SideEffects), AppError> {
    let (actor, context, side_effects) = match credentials {
        Credentials::None => return Err(AuthError::MissingCredentials.into()),
        Credentials::Bearer(token) => {
            let claims = state.verifier.verify(&token).await?;
            let actor = actor_from_claims(&claims, &state.settings.auth)?;
            // Fresh claims: provisioned (never over newer ones); a disabled agent stops here.
            state.agents.ensure(&state.db, &actor).await?;
            (actor, None, SideEffects(true))
        }
        Credentials::Cookie {
            id,
            unsafe_method,
            csrf_header,
            same_origin,
        } => {
            let session = session::load(&state.db, &state.cache, &id)
                .await?
                .ok_or(AuthError::SessionExpired)?;
            // The session's roles and team are its sign-in's: re-checked when due, and a
            // disabled agent is refused at once on this replica, everywhere within a minute.
            let session = super::recheck::idle_or_touch(state, &id, session, request_id).await?;
            let session = super::recheck::if_due(state, &id, session, request_id).await?;
            state
                .agents
                .check_enabled(&state.db, &session.actor.subject)
                .await?;
            let token_matches: bool = csrf_header
                .unwrap_or_default()
                .as_bytes()
                .ct_eq(session.csrf_token.as_bytes())
                .into();
            if unsafe_method && !token_matches {
                return Err(AuthError::CsrfFailed.into());
            }
            (
                session.actor.clone(),
                Some(SessionContext { id, session }),
                SideEffects(token_matches || same_origin),
            )
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
    Ok((actor, context, side_effects))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn settings() -> AuthSettings {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(crate::config::DEFAULT_TOML))
            .extract_inner("auth")
            .unwrap()
    }

    fn claims(value: serde_json::Value) -> VerifiedClaims {
        VerifiedClaims {
            subject: "sub-1".into(),
            claims: value.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn mfa_by_amr_or_acr() {
        let s = settings();
        let base = json!({"realm_access": {"roles": ["agent"]}});
        let mut by_amr = base.clone();
        by_amr["amr"] = json!(["pwd", "otp"]);
        assert!(actor_from_claims(&claims(by_amr), &s).is_ok());
        let mut by_acr = base.clone();
        by_acr["amr"] = json!(["pwd"]);
        by_acr["acr"] = json!("aal2");
        assert!(actor_from_claims(&claims(by_acr), &s).is_ok());
        let mut none = base.clone();
        none["amr"] = json!(["pwd"]);
        none["acr"] = json!("1");
        assert!(matches!(
            actor_from_claims(&claims(none), &s),
            Err(AppError::Auth(AuthError::MfaRequired))
        ));
    }

    #[test]
    fn roles_filtered_team_from_array_and_unknown_roles_ignored() {
        let s = settings();
        let actor = actor_from_claims(
            &claims(json!({
                "amr": ["otp"],
                "realm_access": {"roles": ["offline_access", "manager", "agent", "manager"]},
                "team": ["team-z"],
                "preferred_username": "pat"
            })),
            &s,
        )
        .unwrap();
        assert_eq!(actor.roles, vec![Role::Agent, Role::Manager]);
        assert_eq!(actor.team.as_deref(), Some("team-z"));
        assert_eq!(actor.display_name, "pat");
        let no_known_role = actor_from_claims(
            &claims(json!({"amr": ["otp"], "realm_access": {"roles": ["offline_access"]}})),
            &s,
        );
        assert!(matches!(
            no_known_role,
            Err(AppError::Client {
                code: crate::error::ErrorCode::Forbidden,
                ..
            })
        ));
    }
}
