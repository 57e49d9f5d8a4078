//! Access-token verification (JWT, RFC 9068 / Keycloak). `openidconnect` verifies ID tokens
//! only, so access tokens are checked here with `jsonwebtoken`: the alg allow-list first
//! (from the raw header, so `none` and HS* get their own answer), then the key by `kid`,
//! the signature, iss and exp/nbf, the token type (an ID token is refused), then aud.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation, decode};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::AuthError;
use super::jwks::{JwksCache, Lookup};
use crate::config::AuthSettings;

#[derive(Debug, Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    typ: Option<String>,
}

/// Who a verified logout token logs out, and its id (each is used once).
#[derive(Debug, Clone)]
pub struct LogoutClaims {
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
}

/// What a verified access token says about its holder.
#[derive(Debug, Clone)]
pub struct VerifiedClaims {
    pub subject: String,
    pub claims: Map<String, Value>,
}

impl VerifiedClaims {
    pub fn string(&self, name: &str) -> Option<String> {
        self.claims
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// A claim by dot-separated path (`realm_access.roles`).
    pub fn path(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut current = self.claims.get(parts.next()?)?;
        for part in parts {
            current = current.get(part)?;
        }
        Some(current)
    }

    pub fn strings(&self, path: &str) -> Vec<String> {
        match self.path(path) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    }
}

pub struct TokenVerifier {
    jwks: JwksCache,
    audience: String,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

fn parse_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

impl TokenVerifier {
    pub fn new(jwks: JwksCache, audience: String, settings: &AuthSettings) -> Self {
        Self {
            jwks,
            audience,
            algorithms: settings
                .algorithms
                .iter()
                .filter_map(|a| parse_algorithm(a))
                .collect(),
            leeway: Duration::from_secs(settings.leeway_secs),
        }
    }

    /// A JWS from the issuer: alg allow-list, key by `kid`, signature, `iss`, `exp`/`nbf`
    /// and the `required` claims. The raw header's `typ` comes back with the claims.
    async fn decode_signed(
        &self,
        token: &str,
        required: &[&str],
    ) -> Result<(Option<String>, Map<String, Value>), AuthError> {
        let mut segments = token.split('.');
        let (Some(header_b64), Some(_), Some(_), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(AuthError::MalformedToken);
        };
        let header: RawHeader = URL_SAFE_NO_PAD
            .decode(header_b64)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(AuthError::MalformedToken)?;
        let algorithm = header
            .alg
            .as_deref()
            .and_then(parse_algorithm)
            .filter(|a| self.algorithms.contains(a))
            .ok_or(AuthError::UnsupportedAlgorithm)?;
        let kid = header.kid.ok_or(AuthError::UnknownKey)?;
        let (key, issuer) = match self.jwks.lookup(&kid).await {
            Lookup::Found(key, issuer) => (key, issuer),
            Lookup::UnknownKey => return Err(AuthError::UnknownKey),
            Lookup::Unavailable(e) => return Err(AuthError::IssuerUnavailable(e)),
        };

        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[issuer.as_str()]);
        validation.validate_aud = false; // each caller checks its own audience
        validation.validate_nbf = true;
        validation.leeway = self.leeway.as_secs();
        validation.set_required_spec_claims(required);
        let data = decode::<Map<String, Value>>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => AuthError::InvalidSignature,
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => {
                    AuthError::TokenExpired
                }
                ErrorKind::InvalidIssuer => AuthError::InvalidIssuer,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::UnsupportedAlgorithm
                }
                // The key and the token's algorithm disagree: not this issuer's signature.
                ErrorKind::InvalidKeyFormat
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidEcdsaKey => AuthError::InvalidSignature,
                _ => AuthError::MalformedToken,
            }
        })?;
        Ok((header.typ, data.claims))
    }

    /// An OpenID Connect Back-Channel Logout 1.0 logout token (§2.6), verified like an ID
    /// token: the issuer's signature, `iss`, `aud` = our client id, `iat` within the
    /// leeway-extended last five minutes, the back-channel logout event, `sub` or `sid`,
    /// and no `nonce`.
    pub async fn verify_logout(
        &self,
        token: &str,
        client_id: &str,
    ) -> Result<LogoutClaims, AuthError> {
        let (typ, claims) = self.decode_signed(token, &["iss", "iat", "exp"]).await?;
        if typ.is_some_and(|t| !t.eq_ignore_ascii_case("logout+jwt")) {
            return Err(AuthError::WrongTokenType);
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => aud == client_id,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(client_id)),
            _ => false,
        };
        if !audience_ok {
            return Err(AuthError::InvalidAudience);
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let iat = claims.get("iat").and_then(Value::as_i64).unwrap_or(0);
        if (now - iat).abs() > 300 + self.leeway.as_secs() as i64 {
            return Err(AuthError::TokenExpired);
        }
        let is_logout = claims
            .get("events")
            .and_then(Value::as_object)
            .is_some_and(|e| e.contains_key("http://schemas.openid.net/event/backchannel-logout"));
        if !is_logout || claims.contains_key("nonce") || !claims.contains_key("jti") {
            return Err(AuthError::WrongTokenType);
        }
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let (sub, sid) = (text("sub"), text("sid"));
        if sub.is_none() && sid.is_none() {
            return Err(AuthError::MalformedToken);
        }
        let jti = text("jti").ok_or(AuthError::MalformedToken)?;
        Ok(LogoutClaims { sub, sid, jti })
    }

    pub async fn verify(&self, token: &str) -> Result<VerifiedClaims, AuthError> {
        let (header_typ, claims) = self.decode_signed(token, &["exp", "iss", "sub"]).await?;
        let header = RawHeader {
            alg: None,
            kid: None,
            typ: header_typ,
        };

        // RFC 9068 access tokens say `typ: at+jwt`; Keycloak's say `typ: Bearer` in the
        // payload. ID tokens (`typ: ID`, or carrying nonce/at_hash) are refused.
        let header_typ = header.typ.unwrap_or_default().to_ascii_lowercase();
        let payload_typ = claims.get("typ").and_then(Value::as_str).unwrap_or("");
        let looks_like_id_token = payload_typ.eq_ignore_ascii_case("ID")
            || claims.contains_key("nonce")
            || claims.contains_key("at_hash");
        let is_access_token = header_typ == "at+jwt"
            || header_typ == "application/at+jwt"
            || payload_typ.eq_ignore_ascii_case("Bearer");
        if looks_like_id_token || !is_access_token {
            return Err(AuthError::WrongTokenType);
        }

        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => *aud == self.audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(&self.audience)),
            _ => false,
        };
        if !audience_ok {
            return Err(AuthError::InvalidAudience);
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::MalformedToken)?
            .to_owned();
        Ok(VerifiedClaims { subject, claims })
    }
}
