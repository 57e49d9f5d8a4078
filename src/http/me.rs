//! `GET /v1/me`: who the caller is, as the service sees them.

use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Actor, Role};
use crate::error::AppJson;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub subject: String,
    pub display_name: String,
    pub email: Option<String>,
    pub roles: Vec<Role>,
    pub team: Option<String>,
}

/// The caller: subject, display name, email, roles and team.
#[utoipa::path(get, path = "/v1/me", tag = "agents",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "Not authenticated", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "No MFA or no role", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn me(actor: Actor) -> AppJson<Me> {
    AppJson(Me {
        subject: actor.subject,
        display_name: actor.display_name,
        email: actor.email,
        roles: actor.roles,
        team: actor.team,
    })
}
