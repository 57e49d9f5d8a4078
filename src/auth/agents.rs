//! Agents are provisioned just in time from their claims. The upsert runs on first sight
//! and then only when the claims change or every `REFRESH_AFTER`, so authentication does
//! not cost a database write per request. The same look-up answers whether an admin has
//! disabled the agent (403 `account_disabled` for their tokens and sessions); a disable on
//! this replica takes effect at once, on the others within `REFRESH_AFTER`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::{Actor, AuthError};
use crate::error::AppError;

const REFRESH_AFTER: Duration = Duration::from_secs(60);
/// Entries kept at most; beyond it the cache starts afresh (subjects are agents, so a real
/// installation stays far below it).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Default)]
pub struct Provisioned(Mutex<HashMap<String, Seen>>);

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The claims last written (0: only looked up, from a session).
    print: u64,
    at: Instant,
    disabled: bool,
}

fn fingerprint(actor: &Actor) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    actor.display_name.hash(&mut hasher);
    actor.email.hash(&mut hasher);
    actor.team.hash(&mut hasher);
    actor.roles.hash(&mut hasher);
    hasher.finish() | 1
}

fn disabled_error(disabled: bool) -> Result<(), AppError> {
    if disabled {
        Err(AuthError::AccountDisabled.into())
    } else {
        Ok(())
    }
}

impl Provisioned {
    fn cached(&self, subject: &str, print: Option<u64>) -> Option<bool> {
        let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = seen.get(subject)?;
        (entry.at.elapsed() < REFRESH_AFTER && print.is_none_or(|p| p == entry.print))
            .then_some(entry.disabled)
    }

    fn remember(&self, subject: &str, print: u64, disabled: bool) {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_ENTRIES {
            seen.clear();
        }
        seen.insert(
            subject.to_owned(),
            Seen {
                print,
                at: Instant::now(),
                disabled,
            },
        );
    }

    /// Forget what is known of `subject` (after it was disabled or enabled here).
    pub fn forget(&self, subject: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(subject);
    }

    /// For an actor from a freshly verified token: write its claims (never over newer
    /// ones: a token issued before a team move must not move the agent back), and refuse a
    /// disabled agent.
    pub async fn ensure(&self, db: &PgPool, actor: &Actor) -> Result<(), AppError> {
        let print = fingerprint(actor);
        if let Some(disabled) = self.cached(&actor.subject, Some(print)) {
            return disabled_error(disabled);
        }
        let roles: Vec<String> = actor.roles.iter().map(|r| r.as_str().to_owned()).collect();
        let written: Option<bool> = sqlx::query_scalar!(
            "insert into agents (subject, display_name, email, team, roles, claims_iat)
             values ($1, $2, $3, $4, $5, $6)
             on conflict (subject) do update
                set display_name = excluded.display_name,
                    email = excluded.email,
                    team = excluded.team,
                    roles = excluded.roles,
                    claims_iat = coalesce(excluded.claims_iat, agents.claims_iat),
                    last_seen_at = now()
              where agents.claims_iat is null or excluded.claims_iat is null
                 or agents.claims_iat <= excluded.claims_iat
             returning disabled_at is not null as \"disabled!\"",
            &actor.subject,
            &actor.display_name,
            actor.email.as_deref(),
            actor.team.as_deref(),
            &roles,
            actor.issued_at
        )
        .fetch_optional(db)
        .await?;
        let disabled = match written {
            Some(disabled) => disabled,
            // Older claims than the stored ones: nothing written; still answer for the agent.
            None => self.is_disabled(db, &actor.subject).await?,
        };
        self.remember(&actor.subject, print, disabled);
        disabled_error(disabled)
    }

    /// For a session's actor (claims from sign-in, possibly hours old): write nothing, only
    /// refuse a disabled agent.
    pub async fn check_enabled(&self, db: &PgPool, subject: &str) -> Result<(), AppError> {
        if let Some(disabled) = self.cached(subject, None) {
            return disabled_error(disabled);
        }
        let disabled = self.is_disabled(db, subject).await?;
        // Print 0 never equals a fingerprint: the next token still writes its claims.
        self.remember(subject, 0, disabled);
        disabled_error(disabled)
    }

    async fn is_disabled(&self, db: &PgPool, subject: &str) -> Result<bool, sqlx::Error> {
        let disabled: Option<bool> = sqlx::query_scalar!(
            r#"select disabled_at is not null as "disabled!" from agents where subject = $1"#,
            subject
        )
        .fetch_optional(db)
        .await?;
        Ok(disabled.unwrap_or(false))
    }
}

/// The audit entity id of an agent (the audit log's entity ids are UUIDs; a subject is the
/// provider's opaque id).
pub fn audit_id(subject: &str) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest([b"agent\0".as_slice(), subject.as_bytes()].concat());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::from_bytes(bytes)
}

/// Whether the agent is disabled, the row locked for the rest of the caller's transaction;
/// `None` for an unknown subject.
pub async fn disabled_for_update(
    tx: &mut sqlx::PgConnection,
    subject: &str,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select disabled_at is not null as "disabled!" from agents where subject = $1 for update"#,
        subject
    )
    .fetch_optional(tx)
    .await
}

/// Disable (`disabled`) or enable the agent, recording who did it.
pub async fn set_disabled_at(
    tx: &mut sqlx::PgConnection,
    subject: &str,
    disabled: bool,
    by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update agents set disabled_at = case when $2 then now() end,
                disabled_by = case when $2 then $3 end
          where subject = $1",
        subject,
        disabled,
        by
    )
    .execute(tx)
    .await?;
    Ok(())
}
