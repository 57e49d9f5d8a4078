//! Browser login with the `openidconnect` crate: authorization code + PKCE, state and nonce
//! (`GET /auth/login` → the provider → `GET /auth/callback`), then a server-side session.
//! The ID token is verified by `openidconnect`; roles, team and MFA come from the access
//! token, verified by our own `TokenVerifier` exactly as for bearer requests.

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use secrecy::ExposeSecret;

use super::middleware::actor_from_claims;
use crate::auth::{Actor, AuthError};
use crate::error::AppError;
use crate::state::AppState;

fn http_client(state: &AppState) -> anyhow::Result<openidconnect::reqwest::Client> {
    // The issuer's answers decide who is authenticated: no redirects (SSRF, mix-up).
    let mut builder = openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(
            state.settings.oidc.timeout_secs,
        ));
    if let Some(ca) = &state.settings.oidc.ca_file {
        let pem = crate::tls::read_ca("oidc.ca_file", ca)?;
        builder = builder.tls_built_in_root_certs(false);
        for cert in openidconnect::reqwest::Certificate::from_pem_bundle(&pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder.build()?)
}

pub fn redirect_url(state: &AppState) -> String {
    format!(
        "{}/auth/callback",
        state
            .settings
            .server
            .public_base_url
            .as_str()
            .trim_end_matches('/')
    )
}

async fn client(
    state: &AppState,
    http: &openidconnect::reqwest::Client,
) -> Result<
    openidconnect::core::CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    AppError,
> {
    let secret = state
        .settings
        .oidc
        .client_secret()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .ok_or_else(|| AppError::DependencyUnavailable {
            dependency: "oidc",
            source: anyhow::anyhow!("browser login is not configured (oidc.client_secret)"),
        })?;
    let issuer = IssuerUrl::new(
        state
            .settings
            .oidc
            .issuer_url
            .as_str()
            .trim_end_matches('/')
            .to_owned(),
    )
    .map_err(anyhow::Error::from)?;
    // Discovery (and the JWKS fetch it includes) once per `METADATA_TTL`, not per login:
    // `/auth/login` is reachable by anyone.
    let cached = state
        .oidc
        .login_metadata
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|(at, _)| at.elapsed() < METADATA_TTL)
        .map(|(_, m)| m.clone());
    let metadata = match cached {
        Some(metadata) => metadata,
        None => {
            let metadata = CoreProviderMetadata::discover_async(issuer, http)
                .await
                .map_err(|e| AppError::DependencyUnavailable {
                    dependency: "oidc",
                    source: anyhow::anyhow!("discovery: {e}"),
                })?;
            *state
                .oidc
                .login_metadata
                .lock()
                .unwrap_or_else(|p| p.into_inner()) =
                Some((std::time::Instant::now(), metadata.clone()));
            metadata
        }
    };
    Ok(CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(state.settings.oidc.client_id.clone()),
        Some(ClientSecret::new(secret.expose_secret().to_owned())),
    )
    .set_redirect_uri(RedirectUrl::new(redirect_url(state)).map_err(anyhow::Error::from)?))
}

/// How long the provider's metadata (discovery and keys) is reused for logins. Its signing
/// keys rotate far more slowly; a failed verification with an unknown key re-discovers.
const METADATA_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Only local paths: `return_to` must never send a freshly signed-in agent elsewhere.
pub fn safe_return_to(candidate: Option<&str>) -> String {
    match candidate {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(char::is_control) =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Why a login is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    SignIn,
    /// A fresh authentication for a sensitive operation (RFC 9470 step-up): the provider is
    /// asked to authenticate the user again whatever its own session.
    StepUp,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::SignIn => "sign_in",
            Purpose::StepUp => "step_up",
        }
    }
}

/// The state parameter of a login: the hex SHA-256 of the pre-login cookie's value, so
/// only the browser holding that cookie can finish the login (login CSRF).
pub fn state_for(binding: &str) -> String {
    crate::auth::session::hash_id(binding)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Start a login: remember the PKCE verifier and nonce under the state; return the
/// provider's authorization URL and the value of the pre-login cookie that binds the login
/// to this browser.
pub async fn begin(
    state: &AppState,
    return_to: Option<&str>,
    purpose: Purpose,
) -> Result<(String, String), AppError> {
    let http = http_client(state)?;
    let client = client(state, &http).await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let binding = crate::auth::session::random_token();
    let csrf = state_for(&binding);
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(csrf),
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        // RFC 8707: ask for an access token for this API (Keycloak ignores it and uses its
        // audience mapper instead).
        .add_extra_param("resource", state.settings.oidc.audience.clone());
    if purpose == Purpose::StepUp {
        request = request
            .add_prompt(openidconnect::core::CoreAuthPrompt::Login)
            .set_max_age(std::time::Duration::ZERO);
    }
    let (url, csrf, nonce) = request.url();
    sqlx::query!(
        "insert into oidc_logins (state_hash, pkce_verifier, nonce, return_to, expires_at, purpose)
         values ($1, $2, $3, $4, now() + interval '10 minutes', $5)",
        crate::auth::session::hash_id(csrf.secret()),
        verifier.secret(),
        nonce.secret(),
        safe_return_to(return_to),
        purpose.as_str()
    )
    .execute(&state.db)
    .await?;
    Ok((url.to_string(), binding))
}

/// A finished login.
pub struct Finished {
    pub actor: Actor,
    pub return_to: String,
    pub purpose: Purpose,
    /// The provider's refresh token, if it issued one.
    pub refresh_token: Option<String>,
    /// The provider's session id (`sid` of the ID token), for back-channel logout.
    pub provider_sid: Option<String>,
}

/// Why a callback did not sign anyone in (no PII). `started` when it answered a login this
/// service started: only those are audited (`session.login_failed`), one row per login at
/// most — a made-up callback must not be able to write the append-only audit log.
#[derive(Debug)]
pub struct Failed {
    pub reason: &'static str,
    pub error: AppError,
    pub started: bool,
}

fn failed(reason: &'static str, error: impl Into<AppError>) -> Failed {
    Failed {
        reason,
        error: error.into(),
        started: true,
    }
}

/// Consume the login `csrf_state` names, if this service started one: whether it did.
pub async fn abandon(state: &AppState, csrf_state: &str) -> bool {
    sqlx::query!(
        "delete from oidc_logins where state_hash = $1",
        crate::auth::session::hash_id(csrf_state)
    )
    .execute(&state.db)
    .await
    .is_ok_and(|r| r.rows_affected() > 0)
}

/// The login this callback finishes, taken (deleted) so it can finish only once: its PKCE
/// verifier, nonce, where to return and why — refused unless the browser that started it
/// presents it.
async fn claim_login(
    state: &AppState,
    csrf_state: &str,
    binding: Option<&str>,
) -> Result<(String, String, String, Purpose), Failed> {
    use subtle::ConstantTimeEq;
    // A callback replayed in another browser (login CSRF) carries no cookie, or another's.
    let bound: bool = binding
        .map(state_for)
        .unwrap_or_default()
        .as_bytes()
        .ct_eq(csrf_state.as_bytes())
        .into();
    if !bound {
        // The login, if it was ours, cannot be finished by anyone now.
        let started = abandon(state, csrf_state).await;
        return Err(Failed {
            started,
            ..failed("not_this_browser", AuthError::SessionExpired)
        });
    }
    let login = sqlx::query!(
        "delete from oidc_logins where state_hash = $1 and expires_at > now()
         returning pkce_verifier, nonce, return_to, purpose",
        crate::auth::session::hash_id(csrf_state)
    )
    .fetch_optional(&state.db)
    .await
    .map_err(|e| failed("storage", e))?;
    let login = login.ok_or_else(|| Failed {
        started: false,
        ..failed("unknown_or_expired_state", AuthError::SessionExpired)
    })?;
    let (verifier, nonce, return_to, purpose) = (
        login.pkce_verifier,
        login.nonce,
        login.return_to,
        login.purpose,
    );
    let purpose = if purpose == "step_up" {
        Purpose::StepUp
    } else {
        Purpose::SignIn
    };
    Ok((verifier, nonce, return_to, purpose))
}

/// Finish a login started by the browser holding `binding` (the pre-login cookie): exchange
/// the code, verify both tokens, return the actor and where to go.
pub async fn finish(
    state: &AppState,
    code: &str,
    csrf_state: &str,
    binding: Option<&str>,
) -> Result<Finished, Failed> {
    let (verifier, nonce, return_to, purpose) = claim_login(state, csrf_state, binding).await?;
    let http = http_client(state).map_err(|e| failed("provider", e))?;
    let client = client(state, &http)
        .await
        .map_err(|e| failed("provider", e))?;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| failed("provider", anyhow::Error::from(e)))?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
        .add_extra_param("resource", state.settings.oidc.audience.clone())
        .request_async(&http)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "the code exchange failed");
            failed("code_exchange_failed", AuthError::SessionExpired)
        })?;
    let id_token = tokens
        .id_token()
        .ok_or_else(|| failed("no_id_token", AuthError::WrongTokenType))?;
    let nonce = Nonce::new(nonce);
    if id_token
        .claims(&client.id_token_verifier(), &nonce)
        .is_err()
    {
        // Perhaps signed with a key newer than the cached metadata: discover again, once.
        *state
            .oidc
            .login_metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        let fresh = self::client(state, &http)
            .await
            .map_err(|e| failed("provider", e))?;
        id_token
            .claims(&fresh.id_token_verifier(), &nonce)
            .map_err(|e| {
                tracing::warn!(error = %e, "the ID token did not verify");
                failed("id_token_invalid", AuthError::InvalidSignature)
            })?;
    }
    let claims = state
        .verifier
        .verify(tokens.access_token().secret())
        .await
        .map_err(|e| failed("access_token_invalid", e))?;
    let actor = actor_from_claims(&claims, &state.settings.auth).map_err(|e| {
        let reason = match &e {
            AppError::Auth(AuthError::MfaRequired) => "mfa_required",
            _ => "no_role",
        };
        failed(reason, e)
    })?;
    state
        .agents
        .ensure(&state.db, &actor)
        .await
        .map_err(|e| failed("agent", e))?;
    Ok(Finished {
        actor,
        return_to,
        purpose,
        refresh_token: tokens.refresh_token().map(|t| t.secret().clone()),
        // Verified above; read `sid` from the payload (openidconnect's core claims omit it).
        provider_sid: id_token_claim(&id_token.to_string(), "sid"),
    })
}

/// A string claim of a JWT already verified by the caller.
fn id_token_claim(jwt: &str, name: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get(name)?.as_str().map(str::to_owned)
}

/// What a refresh grant said about a session's user.
pub enum Refreshed {
    /// Still allowed: the actor from the new access token, and the refresh token to keep.
    Valid { actor: Actor, refresh_token: String },
    /// The provider refused (the user is gone, disabled or logged out), or the new token
    /// no longer carries MFA or a role: the session ends.
    Refused(&'static str),
    /// The provider could not be asked.
    Unreachable,
}

/// Ask the provider about a session's user with its refresh token.
pub async fn refresh(state: &AppState, refresh_token: &str) -> Refreshed {
    use openidconnect::RequestTokenError;
    let Ok(http) = http_client(state) else {
        return Refreshed::Unreachable;
    };
    let client = match client(state, &http).await {
        Ok(c) => c,
        Err(_) => return Refreshed::Unreachable,
    };
    let refresh_token = openidconnect::RefreshToken::new(refresh_token.to_owned());
    let request = match client.exchange_refresh_token(&refresh_token) {
        Ok(r) => r,
        Err(_) => return Refreshed::Unreachable,
    };
    let tokens = match request
        .add_extra_param("resource", state.settings.oidc.audience.clone())
        .request_async(&http)
        .await
    {
        Ok(tokens) => tokens,
        Err(RequestTokenError::ServerResponse(e)) => {
            tracing::info!(error = %e.error(), "the provider refused a session's refresh");
            return Refreshed::Refused("provider_refused");
        }
        Err(e) => {
            tracing::warn!(error = %e, "the provider could not be asked about a session");
            return Refreshed::Unreachable;
        }
    };
    let claims = match state.verifier.verify(tokens.access_token().secret()).await {
        Ok(claims) => claims,
        Err(AuthError::IssuerUnavailable(_)) => return Refreshed::Unreachable,
        Err(_) => return Refreshed::Refused("token_invalid"),
    };
    match actor_from_claims(&claims, &state.settings.auth) {
        Ok(actor) => Refreshed::Valid {
            actor,
            refresh_token: tokens
                .refresh_token()
                .map(|t| t.secret().clone())
                .unwrap_or_else(|| refresh_token.secret().clone()),
        },
        Err(_) => Refreshed::Refused("no_mfa_or_role"),
    }
}
