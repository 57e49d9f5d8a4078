//! Tokens from the real test OpenID Provider, through the real authorization-code + PKCE
//! flow; hostile tokens signed by the provider's own key (`/__test/sign`); and a private
//! provider instance for tests that rotate keys or count JWKS fetches.

use std::process::{Child, Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{base_settings, eventually, free_port, repo_root};

pub const CLIENT_ID: &str = "loanfolio";
pub const CLIENT_SECRET: &str = "loanfolio-dev-client-secret";
pub const AUDIENCE: &str = "urn:loanfolio:api";
/// Registered with the provider; the flow stops at the redirect, nothing listens there.
pub const REDIRECT_URI: &str = "http://127.0.0.1:8080/auth/callback";

pub struct Tokens {
    pub access_token: String,
    pub id_token: String,
}

pub fn shared_issuer() -> String {
    base_settings()
        .oidc
        .issuer_url
        .as_str()
        .trim_end_matches('/')
        .to_owned()
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("expected a redirect, got {}", response.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

fn absolute(issuer: &str, location: &str) -> String {
    if location.starts_with("http") {
        location.to_owned()
    } else {
        format!("{issuer}{location}")
    }
}

/// Log `user` in at `issuer` and exchange the code for tokens, as a relying party would.
pub async fn login(issuer: &str, user: &str) -> Tokens {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = uuid::Uuid::new_v4().simple().to_string();
    let response = client
        .get(format!("{issuer}/auth"))
        .query(&[
            ("client_id", CLIENT_ID),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid profile email"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", state.as_str()),
            ("nonce", "test-nonce"),
            ("resource", AUDIENCE),
        ])
        .send()
        .await
        .unwrap();
    let mut next = absolute(issuer, &location(&response));
    // interaction → (login as `user`) → resume → redirect_uri?code=…
    let code = loop {
        let url = if next.contains("/interaction/") {
            format!("{next}?user={user}")
        } else {
            next.clone()
        };
        let response = client.get(&url).send().await.unwrap();
        let to = location(&response);
        if to.starts_with(REDIRECT_URI) {
            let url = url::Url::parse(&to).unwrap();
            let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
            assert_eq!(query.get("state"), Some(&state), "{to}");
            break query
                .get("code")
                .unwrap_or_else(|| panic!("no code in {to}"))
                .clone();
        }
        next = absolute(issuer, &to);
    };
    let response = client
        .post(format!("{issuer}/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier.as_str()),
            ("resource", AUDIENCE),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "token endpoint: {}",
        response.text().await.unwrap()
    );
    let body: Value = response.json().await.unwrap();
    Tokens {
        access_token: body["access_token"].as_str().unwrap().to_owned(),
        id_token: body["id_token"].as_str().unwrap().to_owned(),
    }
}

/// An access token for `user` from the shared test provider.
pub async fn access_token(user: &str) -> String {
    login(&shared_issuer(), user).await.access_token
}

/// A JWS over `payload` with the provider's current key (header fields may be overridden).
pub async fn sign(issuer: &str, header: Value, payload: Value) -> String {
    let body: Value = reqwest::Client::new()
        .post(format!("{issuer}/__test/sign"))
        .json(&serde_json::json!({"header": header, "payload": payload}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["token"].as_str().unwrap().to_owned()
}

/// The claims of a well-formed access token for `sub`, valid for five minutes.
pub fn access_claims(issuer: &str, sub: &str) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    serde_json::json!({
        "iss": issuer, "sub": sub, "aud": AUDIENCE, "iat": now, "exp": now + 300,
        "auth_time": now, "amr": ["pwd", "otp"], "acr": "mfa",
        "realm_access": {"roles": ["agent"]}, "team": "team-a",
        "name": "Signed Tester", "email": "signed.tester@lender.test",
    })
}

pub fn decode_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// A provider of this test's own, so key rotation and JWKS fetch counts touch nobody else.
pub struct PrivateOidc {
    pub issuer: String,
    child: Child,
    _state: tempfile::TempDir,
}

impl PrivateOidc {
    pub async fn start() -> Self {
        Self::start_for(REDIRECT_URI).await
    }

    /// A provider that sends logins back to `redirect_uri` (a real browser follows it).
    pub async fn start_for(redirect_uri: &str) -> Self {
        let port = free_port();
        let state = tempfile::tempdir().unwrap();
        let script = repo_root().join(".local/oidc/provider.mjs");
        assert!(
            script.is_file(),
            "{} missing: run scripts/test once",
            script.display()
        );
        let child = Command::new("node")
            .arg(&script)
            .env("OIDC_PORT", port.to_string())
            .env("OIDC_STATE_DIR", state.path())
            .env("OIDC_REDIRECT_URIS", redirect_uri)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node");
        let issuer = format!("http://127.0.0.1:{port}");
        let probe = format!("{issuer}/.well-known/openid-configuration");
        let up = eventually(30, || {
            let probe = probe.clone();
            async move {
                reqwest::get(&probe)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        assert!(up, "private OpenID Provider did not start");
        Self {
            issuer,
            child,
            _state: state,
        }
    }

    pub async fn jwks_fetches(&self) -> u64 {
        let body: Value = reqwest::get(format!("{}/__test/jwks-fetches", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["count"].as_u64().unwrap()
    }

    pub async fn rotate_key(&self) -> String {
        let body: Value = reqwest::Client::new()
            .post(format!("{}/__test/rotate-key", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["kid"].as_str().unwrap().to_owned()
    }
}

impl Drop for PrivateOidc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
