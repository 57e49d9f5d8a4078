//! Server-side browser sessions: Redis (`session:{sha256(id)}`) for speed, PostgreSQL as the
//! durable copy. Reads try Redis and fall back to PostgreSQL when Redis is down or does not
//! have the session; writes and revocations go to both (Redis best-effort). A Redis copy
//! lives at most `CACHE_TTL`, so a logout made while Redis was unreachable still takes
//! effect everywhere within that bound. Each subject's Redis copies are listed in a set, so
//! disabling an agent or a back-channel logout removes them at once on every replica.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::Actor;
use crate::cache::Cache;

/// The session cookie: `__Host-` whenever it is Secure (only this host, path `/`, HTTPS),
/// so a sibling subdomain cannot set or shadow it.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-lf_session"
    } else {
        "lf_session"
    }
}

/// The short-lived pre-login cookie that binds an authorization request to the browser
/// that started it (login CSRF).
pub fn login_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-lf_login"
    } else {
        "lf_login"
    }
}

const CACHE_TTL: i64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub actor: Actor,
    pub csrf_token: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// When the session's rights were last checked (unix seconds).
    #[serde(default)]
    pub checked_at: i64,
    /// When a request last used the session (unix seconds; recorded at most every
    /// [`SEEN_EVERY_SECS`]): the idle timeout counts from here. A copy cached before the
    /// field existed counts from now.
    #[serde(default = "now")]
    pub seen_at: i64,
}

/// A request records that it used its session at most this often.
pub const SEEN_EVERY_SECS: i64 = 60;

/// What a new session starts with besides its actor.
#[derive(Debug, Default)]
pub struct Origin {
    /// The provider's refresh token, sealed under the installation's session key.
    pub refresh_token_enc: Option<Vec<u8>>,
    /// The provider's session id (`sid`), for back-channel logout.
    pub provider_sid: Option<String>,
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

/// A stable, non-reversible id for audit rows about a session (the audit log's entity ids
/// are UUIDs; a cookie value must never be one).
pub fn audit_id(id_hash: &[u8]) -> uuid::Uuid {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&Sha256::digest([b"session-audit\0".as_slice(), id_hash].concat())[..16]);
    uuid::Uuid::from_bytes(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn redis_key(cache: &Cache, id_hash: &[u8]) -> String {
    cache.key(&format!("session:{}", hex(id_hash)))
}

/// The set of a subject's cached session keys (its name hashes the subject).
fn subject_key(cache: &Cache, subject: &str) -> String {
    cache.key(&format!(
        "sessions-of:{}",
        hex(&Sha256::digest(subject.as_bytes())[..16])
    ))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Create a session for `actor`; returns the cookie value.
pub async fn create(
    db: &PgPool,
    cache: &Cache,
    actor: &Actor,
    ttl: Duration,
    origin: Origin,
) -> Result<(String, Session), sqlx::Error> {
    let id = random_token();
    let id_hash = hash_id(&id);
    let expires_at = time::OffsetDateTime::now_utc() + ttl;
    let session = Session {
        actor: actor.clone(),
        csrf_token: random_token(),
        expires_at: expires_at.unix_timestamp(),
        checked_at: now(),
        seen_at: now(),
    };
    sqlx::query!("insert into sessions (id_hash, subject, actor, csrf_token, expires_at, refresh_token_enc, provider_sid)
         values ($1, $2, $3, $4, $5, $6, $7)", &id_hash, &actor.subject, serde_json::to_value(actor).unwrap_or_default(), &session.csrf_token, expires_at, origin.refresh_token_enc.as_deref(), origin.provider_sid.as_deref())
    .execute(db)
    .await?;
    cache_put(cache, &id_hash, &session).await;
    Ok((id, session))
}

/// A session that ended leaves this mark in Redis for longer than any copy lives, and no
/// copy is written while it is there: a request that read the row from PostgreSQL just
/// before it was deleted cannot bring the session back into the cache.
fn tombstone_key(cache: &Cache, id_hash: &[u8]) -> String {
    cache.key(&format!("session-ended:{}", hex(id_hash)))
}

/// SET the copy unless the session's tombstone exists, and index it under its subject.
const CACHE_PUT: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return 1
";

/// Put a session's copy into Redis — refused once the session has ended.
pub async fn cache_put(cache: &Cache, id_hash: &[u8], session: &Session) {
    let ttl = (session.expires_at - now()).min(CACHE_TTL);
    if ttl <= 0 {
        return;
    }
    let result = async {
        let mut connection = cache.connection().await?;
        let value = serde_json::to_string(session)?;
        let index = subject_key(cache, &session.actor.subject);
        redis::cmd("EVAL")
            .arg(CACHE_PUT)
            .arg(3)
            .arg(redis_key(cache, id_hash))
            .arg(tombstone_key(cache, id_hash))
            .arg(&index)
            .arg(value)
            .arg(ttl)
            .arg(hex(id_hash))
            .arg(CACHE_TTL * 2)
            .query_async::<i64>(&mut connection)
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
    let cached = async {
        let mut connection = cache.connection().await?;
        let value: Option<String> = redis::cmd("GET")
            .arg(redis_key(cache, &id_hash))
            .query_async(&mut connection)
            .await?;
        anyhow::Ok(value.and_then(|v| serde_json::from_str::<Session>(&v).ok()))
    };
    match tokio::time::timeout(Duration::from_secs(1), cached).await {
        Ok(Ok(Some(session))) if session.expires_at > now() => return Ok(Some(session)),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %format!("{e:#}"), "Redis unavailable for sessions; reading PostgreSQL")
        }
        Err(_) => tracing::debug!("Redis too slow for sessions; reading PostgreSQL"),
    }
    load_durable(db, cache, &id_hash).await
}

async fn load_durable(
    db: &PgPool,
    cache: &Cache,
    id_hash: &[u8],
) -> Result<Option<Session>, sqlx::Error> {
    let row = sqlx::query!(
        "select actor, csrf_token, expires_at, checked_at, last_seen_at from sessions
          where id_hash = $1 and expires_at > now()",
        id_hash
    )
    .fetch_optional(db)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let (actor, csrf_token, expires_at, checked_at, seen_at) = (
        row.actor,
        row.csrf_token,
        row.expires_at,
        row.checked_at,
        row.last_seen_at,
    );
    let Ok(actor) = serde_json::from_value::<Actor>(actor) else {
        return Ok(None);
    };
    let session = Session {
        actor,
        csrf_token,
        expires_at: expires_at.unix_timestamp(),
        checked_at: checked_at.unix_timestamp(),
        seen_at: seen_at.unix_timestamp(),
    };
    cache_put(cache, id_hash, &session).await;
    Ok(Some(session))
}

/// What a re-check needs of a session it has claimed.
pub struct Claim {
    pub refresh_token_enc: Option<Vec<u8>>,
    pub failing_since: Option<i64>,
}

/// Claim the re-check of session `id` if it is due (`checked_at` older than `every`
/// seconds): one atomic update, so exactly one of several concurrent requests gets it.
pub async fn claim_recheck(
    db: &PgPool,
    id: &str,
    every: i64,
) -> Result<Option<Claim>, sqlx::Error> {
    let row = sqlx::query!(
        "update sessions set checked_at = now()
          where id_hash = $1 and expires_at > now()
            and checked_at < now() - make_interval(secs => $2)
          returning refresh_token_enc, recheck_failing_since",
        hash_id(id),
        every as f64
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| Claim {
        refresh_token_enc: row.refresh_token_enc,
        failing_since: row.recheck_failing_since.map(|t| t.unix_timestamp()),
    }))
}

/// What a re-check found.
pub enum Recheck {
    /// Still valid: the (possibly new) actor and refresh token.
    Valid {
        actor: Actor,
        refresh_token_enc: Option<Vec<u8>>,
    },
    /// The provider could not be asked; the grace period runs from `since`.
    Unreachable { since: i64 },
}

/// Record what a claimed re-check found.
pub async fn record_recheck(db: &PgPool, id: &str, outcome: &Recheck) -> Result<(), sqlx::Error> {
    let id_hash = hash_id(id);
    match outcome {
        Recheck::Valid {
            actor,
            refresh_token_enc,
        } => {
            sqlx::query!(
                "update sessions set actor = $2, refresh_token_enc = $3,
                        recheck_failing_since = null
                  where id_hash = $1",
                &id_hash,
                serde_json::to_value(actor).unwrap_or_default(),
                refresh_token_enc.as_deref()
            )
            .execute(db)
            .await?;
        }
        Recheck::Unreachable { since } => {
            sqlx::query!(
                "update sessions set recheck_failing_since = to_timestamp($2)
                  where id_hash = $1",
                &id_hash,
                *since as f64
            )
            .execute(db)
            .await?;
        }
    }
    Ok(())
}

/// Put the durable copy of a session back into Redis (after a re-check changed it).
pub async fn recache(db: &PgPool, cache: &Cache, id: &str) -> Result<Option<Session>, sqlx::Error> {
    let id_hash = hash_id(id);
    drop_cached(cache, std::slice::from_ref(&id_hash)).await;
    load_durable(db, cache, &id_hash).await
}

async fn drop_cached(cache: &Cache, id_hashes: &[Vec<u8>]) {
    if id_hashes.is_empty() {
        return;
    }
    if let Ok(mut connection) = cache.connection().await {
        let mut pipe = redis::pipe();
        for id_hash in id_hashes {
            pipe.cmd("DEL").arg(redis_key(cache, id_hash)).ignore();
        }
        let _ = pipe.query_async::<()>(&mut connection).await;
    }
}

/// Mark sessions as ended in Redis (see [`tombstone_key`]), then drop their copies.
async fn bury(cache: &Cache, id_hashes: &[Vec<u8>]) {
    if id_hashes.is_empty() {
        return;
    }
    if let Ok(mut connection) = cache.connection().await {
        let mut pipe = redis::pipe();
        for id_hash in id_hashes {
            pipe.cmd("SET")
                .arg(tombstone_key(cache, id_hash))
                .arg(1)
                .arg("EX")
                .arg(CACHE_TTL * 3)
                .ignore();
            pipe.cmd("DEL").arg(redis_key(cache, id_hash)).ignore();
        }
        let _ = pipe.query_async::<()>(&mut connection).await;
    }
}

/// End session `id` everywhere: the tombstone first (no copy may be written from here on),
/// then the durable row, then the copy.
pub async fn revoke(db: &PgPool, cache: &Cache, id: &str) -> Result<(), sqlx::Error> {
    let id_hash = hash_id(id);
    bury(cache, std::slice::from_ref(&id_hash)).await;
    sqlx::query!("delete from sessions where id_hash = $1", &id_hash)
        .execute(db)
        .await?;
    drop_cached(cache, &[id_hash]).await;
    Ok(())
}

/// Record that session `id` was used now (durable row and cached copy).
pub async fn touch(
    db: &PgPool,
    cache: &Cache,
    id: &str,
    session: &mut Session,
) -> Result<(), sqlx::Error> {
    let id_hash = hash_id(id);
    sqlx::query!(
        "update sessions set last_seen_at = now() where id_hash = $1",
        &id_hash
    )
    .execute(db)
    .await?;
    session.seen_at = now();
    cache_put(cache, &id_hash, session).await;
    Ok(())
}

/// A session that was ended: its id's hash and whose it was.
pub struct Ended {
    pub id_hash: Vec<u8>,
    pub subject: String,
}

/// Delete every session of `subject` (or only the provider session `sid`) in `tx`; the
/// sessions deleted. Call [`uncache`] after the commit.
pub async fn delete_all(
    tx: &mut sqlx::PgConnection,
    subject: Option<&str>,
    provider_sid: Option<&str>,
) -> Result<Vec<Ended>, sqlx::Error> {
    if subject.is_none() && provider_sid.is_none() {
        return Ok(Vec::new());
    }
    sqlx::query_as!(
        Ended,
        "delete from sessions
          where ($1::text is null or subject = $1)
            and ($2::text is null or provider_sid = $2
                 or ($1::text is not null and provider_sid is null))
          returning id_hash, subject",
        subject,
        provider_sid
    )
    .fetch_all(&mut *tx)
    .await
}

/// Drop the Redis copies of sessions [`delete_all`] ended; with `every_of_subject`, every
/// copy the subject's index names too (a replica may have cached one a moment ago).
pub async fn uncache(cache: &Cache, ended: &[Ended], every_of_subject: Option<&str>) {
    let mut hashes: Vec<Vec<u8>> = ended.iter().map(|e| e.id_hash.clone()).collect();
    if let Some(subject) = every_of_subject
        && let Ok(mut connection) = cache.connection().await
    {
        let index = subject_key(cache, subject);
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut connection)
            .await
            .unwrap_or_default();
        for member in members {
            let bytes: Option<Vec<u8>> = (0..member.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(member.get(i..i + 2)?, 16).ok())
                .collect();
            if let Some(bytes) = bytes
                && !hashes.contains(&bytes)
            {
                hashes.push(bytes);
            }
        }
        let _ = redis::cmd("DEL")
            .arg(&index)
            .query_async::<()>(&mut connection)
            .await;
    }
    bury(cache, &hashes).await;
}
