//! `GET /v1/loans/{id}/notifications`: what was sent about a loan, to whom (masked), state;
//! and the borrower's unsubscribe page and the agent's SMS consent routes.

pub mod sms_consent;
pub mod unsubscribe;

use axum::extract::{Path, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{NotificationList, ops};
use crate::auth::Actor;
use crate::error::{AppError, AppJson};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_notifications))
}

/// What was sent about this loan, newest first.
#[utoipa::path(get, path = "/v1/loans/{id}/notifications", tag = "loans",
    params(("id" = Uuid, Path), crate::http::support::PageParams),
    responses((status = 200, description = "Notifications", body = NotificationList)))]
async fn list_notifications(
    State(state): State<AppState>,
    actor: Actor,
    Path(loan): Path<Uuid>,
    query: Result<
        axum::extract::Query<crate::http::support::PageParams>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<AppJson<NotificationList>, AppError> {
    let page = crate::http::support::PageParams::from_query(query)?.page::<Uuid>()?;
    Ok(AppJson(ops::for_loan(&state, &actor, loan, page).await?))
}
