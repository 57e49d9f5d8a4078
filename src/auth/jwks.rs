//! The issuer's signing keys, cached. An unknown `kid` triggers a refetch at most once per
//! `jwks_min_refresh_secs`, so a flood of tokens with bogus kids cannot hammer the provider;
//! keys older than `jwks_max_age_secs` are refreshed on use, which picks up rotations.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Mutex;

use super::discovery::Discovery;

#[derive(Clone)]
pub struct VerificationKey {
    pub key: DecodingKey,
}

struct Keys {
    by_kid: HashMap<String, VerificationKey>,
    issuer: Option<String>,
    fetched_at: Option<Instant>,
}

pub struct JwksCache {
    discovery: Discovery,
    keys: RwLock<Keys>,
    /// Serialises fetches; holds the time of the last attempt, successful or not.
    last_attempt: Mutex<Option<Instant>>,
    min_refresh: Duration,
    max_age: Duration,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache").finish_non_exhaustive()
    }
}

pub enum Lookup {
    Found(VerificationKey, String),
    UnknownKey,
    Unavailable(anyhow::Error),
}

impl JwksCache {
    pub fn new(discovery: Discovery, min_refresh: Duration, max_age: Duration) -> Self {
        Self {
            discovery,
            keys: RwLock::new(Keys {
                by_kid: HashMap::new(),
                issuer: None,
                fetched_at: None,
            }),
            last_attempt: Mutex::new(None),
            min_refresh,
            max_age,
        }
    }

    fn cached(&self, kid: &str) -> (Option<(VerificationKey, String)>, bool) {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let stale = keys.fetched_at.is_none_or(|t| t.elapsed() > self.max_age);
        let found = keys.by_kid.get(kid).cloned().zip(keys.issuer.clone());
        (found, stale)
    }

    /// The key for `kid` and the issuer's exact identifier.
    pub async fn lookup(&self, kid: &str) -> Lookup {
        let (found, stale) = self.cached(kid);
        if let Some((key, issuer)) = found.clone()
            && !stale
        {
            return Lookup::Found(key, issuer);
        }
        if let Err(e) = self.refresh().await
            && found.is_none()
        {
            let never_fetched = self
                .keys
                .read()
                .map(|k| k.fetched_at.is_none())
                .unwrap_or(true);
            if never_fetched {
                return Lookup::Unavailable(e);
            }
        }
        match self.cached(kid).0.or(found) {
            Some((key, issuer)) => Lookup::Found(key, issuer),
            None => Lookup::UnknownKey,
        }
    }

    /// Fetch the JWKS unless an attempt was made within `min_refresh`.
    async fn refresh(&self) -> anyhow::Result<()> {
        let mut last = self.last_attempt.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let metadata = self.discovery.fetch().await?;
        let set: JwkSet = self
            .discovery
            .http()
            .get(metadata.jwks_uri.clone())
            .send()
            .await
            .context("fetching the JWKS")?
            .error_for_status()
            .context("fetching the JWKS")?
            .json()
            .await
            .context("parsing the JWKS")?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            // Encryption keys and keys we cannot use are skipped, not fatal.
            if matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            ) {
                continue;
            }
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                by_kid.insert(kid, VerificationKey { key });
            }
        }
        tracing::info!(keys = by_kid.len(), "fetched the issuer's signing keys");
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.by_kid = by_kid;
        keys.issuer = Some(metadata.issuer);
        keys.fetched_at = Some(Instant::now());
        Ok(())
    }
}
