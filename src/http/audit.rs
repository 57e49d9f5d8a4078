//! `GET /v1/audit`: the audit log for compliance and admin.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::audit;
use crate::auth::{Actor, Role};
use crate::error::{AppError, AppJson, ErrorCode};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    entity_type: Option<String>,
    entity_id: Option<Uuid>,
    /// The actor's subject.
    actor: Option<String>,
    /// The action, exactly (e.g. `lead.ssn_revealed`).
    action: Option<String>,
    /// RFC 3339, inclusive.
    from: Option<String>,
    /// RFC 3339, exclusive.
    to: Option<String>,
    limit: Option<i64>,
    cursor: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditActor {
    subject: String,
    roles: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    seq: i64,
    at: String,
    actor: AuditActor,
    action: String,
    entity_type: String,
    entity_id: Uuid,
    request_id: Option<String>,
    details: Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    items: Vec<AuditEntry>,
    next_cursor: Option<String>,
}

fn bad(detail: &str) -> AppError {
    AppError::client(
        StatusCode::BAD_REQUEST,
        ErrorCode::MalformedRequest,
        detail.to_owned(),
    )
}

/// Audit entries, newest first (compliance and admin only).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditParams),
    responses(
        (status = 200, description = "A page of entries", body = AuditPage),
        (status = 403, description = "Not compliance or admin", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn list_audit(
    State(state): State<AppState>,
    actor: Actor,
    query: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<AppJson<AuditPage>, AppError> {
    if !(actor.has(Role::Compliance) || actor.has(Role::Admin)) {
        return Err(AppError::forbidden());
    }
    let Query(params) = query.map_err(|_| bad("a query parameter is not valid"))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(bad("`limit` must be between 1 and 200"));
    }
    let time = |t: &Option<String>| {
        t.as_deref()
            .map(|t| OffsetDateTime::parse(t, &Rfc3339).map_err(|_| bad("times must be RFC 3339")))
            .transpose()
    };
    let filter = audit::PageFilter {
        entity_type: params.entity_type,
        entity_id: params.entity_id,
        actor: params.actor,
        action: params.action,
        from: time(&params.from)?,
        to: time(&params.to)?,
        before: params.cursor,
    };
    let mut rows = audit::page(&state.db, &filter, limit + 1).await?;
    let next_cursor = crate::http::support::next_page(&mut rows, limit, |r| r.seq.to_string());
    let items = rows
        .into_iter()
        .map(|r| AuditEntry {
            seq: r.seq,
            at: r.at.format(&Rfc3339).unwrap_or_default(),
            actor: AuditActor {
                subject: r.actor_subject,
                roles: r.actor_roles,
            },
            action: r.action,
            entity_type: r.entity_type,
            entity_id: r.entity_id,
            request_id: r.request_id,
            details: r.details,
        })
        .collect();
    Ok(AppJson(AuditPage { items, next_cursor }))
}
