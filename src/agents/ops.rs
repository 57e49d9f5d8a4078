//! The agents list, and disabling and enabling an agent.

use super::{Agent, AgentList, Changed, store};
use crate::auth::{Actor, Role, agents, session};
use crate::domain::rfc3339;
use crate::error::AppError;
use crate::state::AppState;

/// A page of the agents known to the service (provisioned at first sign-in), after `cursor`
/// (a subject). Who may see whom is decided here, not by the caller's face: the JSON API
/// and the console show the same agents.
pub async fn list(
    state: &AppState,
    actor: &Actor,
    cursor: Option<&str>,
    limit: i64,
) -> Result<AgentList, AppError> {
    // Admins see every agent; a manager their own team; nobody else any.
    let team = if actor.has(Role::Admin) {
        None
    } else {
        match (&actor.team, actor.has(Role::Manager)) {
            (Some(team), true) => Some(team.as_str()),
            _ => return Err(AppError::forbidden()),
        }
    };
    let mut rows = store::page(&state.db, team, cursor, limit + 1).await?;
    let next_cursor = crate::db::next_page(&mut rows, limit, |r| r.subject.clone());
    Ok(AgentList {
        items: rows
            .into_iter()
            .map(|r| Agent {
                subject: r.subject,
                display_name: r.display_name,
                email: r.email,
                roles: r.roles,
                team: r.team,
                disabled_at: r.disabled_at.map(rfc3339),
                first_seen_at: rfc3339(r.first_seen_at),
                last_seen_at: rfc3339(r.last_seen_at),
            })
            .collect(),
        next_cursor,
    })
}

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
    // The rule lives here, not in a face: the API, the console and the CLI (an operator
    // acting as admin) all come through it.
    if !by.has(Role::Admin) {
        return Err(AppError::forbidden());
    }
    if disabled && subject == by.subject {
        return Err(AppError::client(
            axum::http::StatusCode::CONFLICT,
            crate::error::ErrorCode::Conflict,
            "an admin cannot disable their own account",
        ));
    }
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
