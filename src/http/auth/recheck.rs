//! A browser session's rights follow the agent's (docs/security.md, "Sessions"): at most
//! every `auth.session_recheck_secs` a request re-checks the session — the agent's own
//! `disabled_at` always, and where the provider issued a refresh token a refresh grant,
//! whose answer replaces the session's roles and team or, refused, ends the session. While
//! the provider cannot be reached the session lives on for `auth.recheck_grace_secs`, then
//! ends. Session events are audited (entity_type `session`, no PII).

use std::sync::Arc;

use serde_json::json;

use super::login::{self, Refreshed};
use crate::auth::session::{self, Recheck, Session};
use crate::auth::{Actor, AuthError};
use crate::crypto::DataKey;
use crate::error::AppError;
use crate::state::AppState;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn refresh_aad(subject: &str) -> Vec<u8> {
    format!("session-refresh-token\0{subject}").into_bytes()
}

async fn session_key(state: &AppState) -> Result<Arc<DataKey>, AppError> {
    state
        .keys
        .session_key(&state.db)
        .await
        .map_err(|e| AppError::DependencyUnavailable {
            dependency: "kms",
            source: e,
        })
}

/// A refresh token sealed for storage with `subject`'s sessions.
pub async fn seal_refresh_token(
    state: &AppState,
    subject: &str,
    token: &str,
) -> Result<Vec<u8>, AppError> {
    let key = session_key(state).await?;
    Ok(crate::crypto::aead_seal(
        &key,
        &refresh_aad(subject),
        token.as_bytes(),
    ))
}

async fn open_refresh_token(
    state: &AppState,
    subject: &str,
    sealed: &[u8],
) -> Result<String, AppError> {
    let key = session_key(state).await?;
    let plain = crate::crypto::aead_open(&key, &refresh_aad(subject), sealed)
        .map_err(|e| AppError::Internal(e.context("a session's refresh token does not verify")))?;
    Ok(String::from_utf8_lossy(&plain).into_owned())
}

/// End session `id` for `reason`: the row's deletion and its `session.ended` audit row in
/// one transaction (session row first, then the audit chain — the order every path that
/// ends sessions takes, so two of them never deadlock), then its Redis copies.
async fn end(
    state: &AppState,
    id: &str,
    actor: &Actor,
    reason: &str,
    request_id: Option<&str>,
) -> Result<(), AppError> {
    let id_hash = session::hash_id(id);
    let mut tx = state.db.begin().await?;
    let deleted = sqlx::query!("delete from sessions where id_hash = $1", &id_hash)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        // Another request ended it first and audited it.
        tx.rollback().await?;
        session::revoke(&state.db, &state.cache, id).await?;
        return Ok(());
    }
    crate::audit::session_event(
        &mut tx,
        actor,
        "session.ended",
        &id_hash,
        request_id,
        json!({ "reason": reason }),
    )
    .await?;
    tx.commit().await?;
    session::revoke(&state.db, &state.cache, id).await?;
    tracing::info!(reason, "a session ended on re-check");
    Ok(())
}

/// End `session` when it has been idle longer than `auth.idle_timeout_secs` (audited
/// `session.ended`, reason `idle`), else record that it is in use (at most once a minute).
pub async fn idle_or_touch(
    state: &AppState,
    id: &str,
    mut session: Session,
    request_id: Option<&str>,
) -> Result<Session, AppError> {
    let idle = state.settings.auth.idle_timeout_secs as i64;
    if idle == 0 {
        return Ok(session);
    }
    let since = now() - session.seen_at;
    if since > idle {
        end(state, id, &session.actor, "idle", request_id).await?;
        return Err(AuthError::SessionExpired.into());
    }
    if since >= session::SEEN_EVERY_SECS.min(idle) {
        // Best effort: a request is not refused because its use could not be recorded (the
        // next one records it; the timeout can only come later, never earlier).
        if let Err(e) = session::touch(&state.db, &state.cache, id, &mut session).await {
            tracing::warn!(error = %e, "a session's last use was not recorded");
        }
    }
    Ok(session)
}

/// Re-check `session` if it is due; the session to use for this request, or why there is
/// none any more. One request claims the check (an atomic update of `checked_at`); it runs
/// without holding a lock or a connection while it asks the provider, and concurrent
/// requests carry on with the session as it is. So a rotated refresh token is used once,
/// and a slow provider cannot tie up the database pool.
pub async fn if_due(
    state: &AppState,
    id: &str,
    session: Session,
    request_id: Option<&str>,
) -> Result<Session, AppError> {
    let settings = &state.settings.auth;
    let every = settings.session_recheck_secs as i64;
    if now() - session.checked_at < every {
        return Ok(session);
    }
    let Some(claim) = session::claim_recheck(&state.db, id, every).await? else {
        // Another request holds the check, or the session is gone: read what is stored.
        return session::recache(&state.db, &state.cache, id)
            .await?
            .ok_or_else(|| AuthError::SessionExpired.into());
    };
    let actor = session.actor.clone();
    state.agents.forget(&actor.subject);
    if let Err(e) = state.agents.check_enabled(&state.db, &actor.subject).await {
        if matches!(e, AppError::Auth(AuthError::AccountDisabled)) {
            end(state, id, &actor, "agent_disabled", request_id).await?;
        }
        return Err(e);
    }
    let outcome = match &claim.refresh_token_enc {
        // Providers without refresh tokens rely on `disabled_at` and back-channel logout.
        None => Recheck::Valid {
            actor: actor.clone(),
            refresh_token_enc: None,
        },
        Some(sealed) => {
            let token = open_refresh_token(state, &actor.subject, sealed).await?;
            match login::refresh(state, &token).await {
                Refreshed::Valid {
                    actor: fresh,
                    refresh_token,
                } => {
                    if fresh.subject != actor.subject {
                        end(state, id, &actor, "subject_changed", request_id).await?;
                        return Err(AuthError::SessionExpired.into());
                    }
                    // Fresh claims: provisioning takes the new roles and team.
                    if let Err(e) = state.agents.ensure(&state.db, &fresh).await {
                        if matches!(e, AppError::Auth(AuthError::AccountDisabled)) {
                            end(state, id, &actor, "agent_disabled", request_id).await?;
                        }
                        return Err(e);
                    }
                    let refresh_token_enc =
                        Some(seal_refresh_token(state, &fresh.subject, &refresh_token).await?);
                    Recheck::Valid {
                        actor: fresh,
                        refresh_token_enc,
                    }
                }
                Refreshed::Refused(reason) => {
                    end(state, id, &actor, reason, request_id).await?;
                    return Err(AuthError::SessionExpired.into());
                }
                Refreshed::Unreachable => {
                    let since = claim.failing_since.unwrap_or_else(now);
                    if now() - since > settings.recheck_grace_secs as i64 {
                        end(state, id, &actor, "provider_unreachable", request_id).await?;
                        return Err(AuthError::SessionExpired.into());
                    }
                    Recheck::Unreachable { since }
                }
            }
        }
    };
    session::record_recheck(&state.db, id, &outcome).await?;
    session::recache(&state.db, &state.cache, id)
        .await?
        .ok_or_else(|| AuthError::SessionExpired.into())
}
