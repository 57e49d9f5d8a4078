//! Server-side browser sessions: Redis (`session:{sha256(id)}`) for speed, PostgreSQL as the
//! durable copy. Reads try Redis and fall back to PostgreSQL when Redis is down or does not
//! have the session; writes and revocations go to both (Redis best-effort). A Redis copy
//! lives at most `CACHE_TTL`, so a logout made while Redis was unreachable still takes
//! effect everywhere within that bound.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::Actor;
use crate::cache::Cache;

pub const COOKIE: &str = "lf_session";
const CACHE_TTL: i64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub actor: Actor,
    pub csrf_token: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// 256 random bits, URL-safe.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // SystemRandom fails only if the OS has no randomness at all; then nothing is safe.
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash_id(id: &str) -> Vec<u8> {
    Sha256::digest(id.as_bytes()).to_vec()
}

fn redis_key(cache: &Cache, id_hash: &[u8]) -> String {
    let hex: String = id_hash.iter().map(|b| format!("{b:02x}")).collect();
    cache.key(&format!("session:{hex}"))
}

/// Create a session for `actor`; returns the cookie value.
pub async fn create(
    db: &PgPool,
    cache: &Cache,
    actor: &Actor,
    ttl: Duration,
) -> Result<(String, Session), sqlx::Error> {
    let id = random_token();
    let id_hash = hash_id(&id);
    let expires_at = time::OffsetDateTime::now_utc() + ttl;
    let session = Session {
        actor: actor.clone(),
        csrf_token: random_token(),
        expires_at: expires_at.unix_timestamp(),
    };
    // language=PostgreSQL
    sqlx::query(
        "insert into sessions (id_hash, subject, actor, csrf_token, expires_at)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(&id_hash)
    .bind(&actor.subject)
    .bind(serde_json::to_value(actor).unwrap_or_default())
    .bind(&session.csrf_token)
    .bind(expires_at)
    .execute(db)
    .await?;
    cache_put(cache, &id_hash, &session).await;
    Ok((id, session))
}

async fn cache_put(cache: &Cache, id_hash: &[u8], session: &Session) {
    let ttl =
        (session.expires_at - time::OffsetDateTime::now_utc().unix_timestamp()).min(CACHE_TTL);
    if ttl <= 0 {
        return;
    }
    let result = async {
        let mut connection = cache.connection().await?;
        let value = serde_json::to_string(session)?;
        redis::cmd("SET")
            .arg(redis_key(cache, id_hash))
            .arg(value)
            .arg("EX")
            .arg(ttl)
            .query_async::<()>(&mut connection)
            .await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %format!("{e:#}"), "session not cached in Redis; PostgreSQL holds it");
    }
}

/// The live session for a cookie value, if any.
pub async fn load(db: &PgPool, cache: &Cache, id: &str) -> Result<Option<Session>, sqlx::Error> {
    let id_hash = hash_id(id);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let cached = async {
        let mut connection = cache.connection().await?;
        let value: Option<String> = redis::cmd("GET")
            .arg(redis_key(cache, &id_hash))
            .query_async(&mut connection)
            .await?;
        anyhow::Ok(value.and_then(|v| serde_json::from_str::<Session>(&v).ok()))
    };
    match tokio::time::timeout(Duration::from_secs(1), cached).await {
        Ok(Ok(Some(session))) if session.expires_at > now => return Ok(Some(session)),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %format!("{e:#}"), "Redis unavailable for sessions; reading PostgreSQL")
        }
        Err(_) => tracing::debug!("Redis too slow for sessions; reading PostgreSQL"),
    }
    // language=PostgreSQL
    let row: Option<(serde_json::Value, String, time::OffsetDateTime)> = sqlx::query_as(
        "select actor, csrf_token, expires_at from sessions
          where id_hash = $1 and expires_at > now()",
    )
    .bind(&id_hash)
    .fetch_optional(db)
    .await?;
    let Some((actor, csrf_token, expires_at)) = row else {
        return Ok(None);
    };
    let Ok(actor) = serde_json::from_value::<Actor>(actor) else {
        return Ok(None);
    };
    let session = Session {
        actor,
        csrf_token,
        expires_at: expires_at.unix_timestamp(),
    };
    cache_put(cache, &id_hash, &session).await;
    Ok(Some(session))
}

pub async fn revoke(db: &PgPool, cache: &Cache, id: &str) -> Result<(), sqlx::Error> {
    let id_hash = hash_id(id);
    // language=PostgreSQL
    sqlx::query("delete from sessions where id_hash = $1")
        .bind(&id_hash)
        .execute(db)
        .await?;
    if let Ok(mut connection) = cache.connection().await {
        let _ = redis::cmd("DEL")
            .arg(redis_key(cache, &id_hash))
            .query_async::<()>(&mut connection)
            .await;
    }
    Ok(())
}
