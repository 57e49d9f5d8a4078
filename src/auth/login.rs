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
use super::{Actor, AuthError};
use crate::app::AppState;
use crate::error::AppError;

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
    let metadata = CoreProviderMetadata::discover_async(issuer, http)
        .await
        .map_err(|e| AppError::DependencyUnavailable {
            dependency: "oidc",
            source: anyhow::anyhow!("discovery: {e}"),
        })?;
    Ok(CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(state.settings.oidc.client_id.clone()),
        Some(ClientSecret::new(secret.expose_secret().to_owned())),
    )
    .set_redirect_uri(RedirectUrl::new(redirect_url(state)).map_err(anyhow::Error::from)?))
}

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

/// Start a login: remember the PKCE verifier and nonce under the state, return the
/// provider's authorization URL.
pub async fn begin(state: &AppState, return_to: Option<&str>) -> Result<String, AppError> {
    let http = http_client(state)?;
    let client = client(state, &http).await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        // RFC 8707: ask for an access token for this API (Keycloak ignores it and uses its
        // audience mapper instead).
        .add_extra_param("resource", state.settings.oidc.audience.clone())
        .url();
    // language=PostgreSQL
    sqlx::query(
        "insert into oidc_logins (state_hash, pkce_verifier, nonce, return_to, expires_at)
         values ($1, $2, $3, $4, now() + interval '10 minutes')",
    )
    .bind(super::session::hash_id(csrf.secret()))
    .bind(verifier.secret())
    .bind(nonce.secret())
    .bind(safe_return_to(return_to))
    .execute(&state.db)
    .await?;
    Ok(url.to_string())
}

/// Finish a login: exchange the code, verify both tokens, return the actor and where to go.
pub async fn finish(
    state: &AppState,
    code: &str,
    csrf_state: &str,
) -> Result<(Actor, String), AppError> {
    // language=PostgreSQL
    let login: Option<(String, String, String)> = sqlx::query_as(
        "delete from oidc_logins where state_hash = $1 and expires_at > now()
         returning pkce_verifier, nonce, return_to",
    )
    .bind(super::session::hash_id(csrf_state))
    .fetch_optional(&state.db)
    .await?;
    let (verifier, nonce, return_to) = login.ok_or(AuthError::SessionExpired)?;
    let http = http_client(state)?;
    let client = client(state, &http).await?;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(anyhow::Error::from)?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
        .add_extra_param("resource", state.settings.oidc.audience.clone())
        .request_async(&http)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "the code exchange failed");
            AuthError::SessionExpired
        })?;
    let id_token = tokens.id_token().ok_or(AuthError::WrongTokenType)?;
    id_token
        .claims(&client.id_token_verifier(), &Nonce::new(nonce))
        .map_err(|e| {
            tracing::warn!(error = %e, "the ID token did not verify");
            AuthError::InvalidSignature
        })?;
    let claims = state
        .verifier
        .verify(tokens.access_token().secret())
        .await?;
    let actor = actor_from_claims(&claims, &state.settings.auth)?;
    state.agents.ensure(&state.db, &actor).await?;
    Ok((actor, return_to))
}
