//! Agents (docs/api.md, "Agents"): who has signed in, and disabling an account — which
//! ends every session of it at once and refuses its tokens (403 `account_disabled`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ops::{list, set_disabled};
use super::{AgentList, Changed};
use crate::auth::Actor;
use crate::error::{AppError, AppJson};
use crate::http::edge::RequestId;
use crate::http::support::malformed;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_agents))
        .routes(routes!(disable_agent))
        .routes(routes!(enable_agent))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1–200, default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Agents known to the service (provisioned at first sign-in): admins see all, managers
/// their own team.
#[utoipa::path(get, path = "/v1/agents", tag = "agents", params(ListParams),
    responses((status = 200, description = "A page of agents", body = AgentList)))]
async fn list_agents(
    State(state): State<AppState>,
    actor: Actor,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<AppJson<AgentList>, AppError> {
    let Query(params) = query.map_err(|_| malformed("a query parameter is not valid"))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(malformed("`limit` must be between 1 and 200"));
    }
    Ok(AppJson(
        list(&state, &actor, params.cursor.as_deref(), limit).await?,
    ))
}

async fn change(
    state: &AppState,
    actor: &Actor,
    request_id: &str,
    subject: &str,
    disabled: bool,
) -> Result<Response, AppError> {
    match set_disabled(state, subject, disabled, actor, Some(request_id)).await? {
        Changed::Unknown => Err(AppError::not_found()),
        Changed::Unchanged | Changed::Done { .. } => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// Disable an agent (admin): every session of theirs ends at once and their tokens are
/// refused with 403 `account_disabled`; audited `agent.disabled`.
#[utoipa::path(post, path = "/v1/agents/{subject}/disable", tag = "agents",
    params(("subject" = String, Path, description = "The agent's subject")),
    responses(
        (status = 204, description = "Disabled (or already)"),
        (status = 409, description = "Your own account", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn disable_agent(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(subject): Path<String>,
) -> Result<Response, AppError> {
    change(&state, &actor, &request_id.0, &subject, true).await
}

/// Enable a disabled agent again (admin); audited `agent.enabled`.
#[utoipa::path(post, path = "/v1/agents/{subject}/enable", tag = "agents",
    params(("subject" = String, Path, description = "The agent's subject")),
    responses((status = 204, description = "Enabled (or already)")))]
async fn enable_agent(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(subject): Path<String>,
) -> Result<Response, AppError> {
    change(&state, &actor, &request_id.0, &subject, false).await
}
