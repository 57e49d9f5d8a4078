//! The OpenID Provider's discovery document (OpenID Connect Discovery 1.0 §4).

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::config::OidcSettings;

#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub jwks_uri: url::Url,
    pub authorization_endpoint: Option<url::Url>,
    pub token_endpoint: Option<url::Url>,
}

/// The provider's metadata for browser logins, with when it was fetched.
pub type LoginMetadata = std::sync::Arc<
    std::sync::Mutex<
        Option<(
            std::time::Instant,
            openidconnect::core::CoreProviderMetadata,
        )>,
    >,
>;

#[derive(Clone)]
pub struct Discovery {
    issuer: url::Url,
    http: reqwest::Client,
    /// Cached by `http::auth::login` (discovery + JWKS), so logins do not fetch it each time.
    pub login_metadata: LoginMetadata,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("issuer", &self.issuer.as_str())
            .finish_non_exhaustive()
    }
}

impl Discovery {
    pub fn new(settings: &OidcSettings) -> anyhow::Result<Self> {
        // The issuer's answers decide who is authenticated: follow no redirects.
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(settings.timeout_secs))
            .timeout(Duration::from_secs(settings.timeout_secs));
        http = crate::tls::pin_roots(http, "oidc.ca_file", settings.ca_file.as_deref())?;
        Ok(Self {
            issuer: settings.issuer_url.clone(),
            http: http.build()?,
            login_metadata: LoginMetadata::default(),
        })
    }

    /// The no-redirect client used for everything the issuer serves.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn issuer(&self) -> &url::Url {
        &self.issuer
    }

    pub async fn fetch(&self) -> anyhow::Result<ProviderMetadata> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.as_str().trim_end_matches('/')
        );
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .context("fetching the discovery document")?;
        if !response.status().is_success() {
            bail!("discovery document answered {}", response.status());
        }
        let metadata: ProviderMetadata = response
            .json()
            .await
            .context("parsing the discovery document")?;
        // The issuer must match exactly (§4.3), or tokens could be accepted from a
        // provider the configuration does not name.
        if metadata.issuer.trim_end_matches('/') != self.issuer.as_str().trim_end_matches('/') {
            bail!("the discovery document names a different issuer");
        }
        Ok(metadata)
    }
}
