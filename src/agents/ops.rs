//! Disabling and enabling an agent.

use super::Changed;
use crate::auth::{Actor, agents, session};
use crate::error::AppError;
use crate::state::AppState;

/// Disable (or enable) an agent: `disabled_at`, the audit row (`agent.disabled` /
/// `agent.enabled`, entity_type `agent`) and — disabling — the end of every session of
/// theirs (each audited `session.ended`), in one transaction; the sessions' Redis copies go
/// after the commit. Tokens are refused from then on (403 `account_disabled`).
pub async fn set_disabled(
    state: &AppState,
    subject: &str,
    disabled: bool,
    by: &Actor,
    request_id: Option<&str>,
) -> Result<Changed, AppError> {
    let mut tx = state.db.begin().await?;
    let current = agents::disabled_for_update(&mut tx, subject).await?;
    let Some(current) = current else {
        return Ok(Changed::Unknown);
    };
    if current == disabled {
        return Ok(Changed::Unchanged);
    }
    agents::set_disabled_at(&mut tx, subject, disabled, &by.subject).await?;
    // Sessions first, then the audit chain: the order of every path that ends sessions.
    let ended = if disabled {
        session::delete_all(&mut tx, Some(subject), None).await?
    } else {
        Vec::new()
    };
    crate::audit::record(
        &mut tx,
        crate::audit::Entry {
            chain: crate::audit::GLOBAL_CHAIN,
            actor: by,
            action: if disabled {
                "agent.disabled"
            } else {
                "agent.enabled"
            },
            entity_type: "agent",
            entity_id: agents::audit_id(subject),
            request_id,
            details: serde_json::json!({ "subject": subject }),
        },
    )
    .await?;
    for session in &ended {
        crate::audit::session_event(
            &mut tx,
            by,
            "session.ended",
            &session.id_hash,
            request_id,
            serde_json::json!({ "reason": "agent_disabled" }),
        )
        .await?;
    }
    tx.commit().await?;
    if disabled {
        session::uncache(&state.cache, &ended, Some(subject)).await;
    }
    state.agents.forget(subject);
    Ok(Changed::Done {
        sessions_ended: ended.len(),
    })
}
