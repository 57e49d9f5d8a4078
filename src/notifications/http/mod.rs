//! `GET /v1/loans/{id}/notifications`: what was sent about a loan, to whom (masked), state;
//! and the borrower's unsubscribe page and the agent's SMS consent routes.

pub mod sms_consent;
pub mod unsubscribe;

use axum::extract::{Path, State};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Actor;
use crate::crypto::field::{self, Location};
use crate::error::{AppError, AppJson};
use crate::http::support::{kms_unavailable, rfc3339};
use crate::loans::ops::visible_loan;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_notifications))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Notification {
    id: Uuid,
    channel: String,
    template: String,
    recipient_kind: String,
    /// Masked: `c***@example.org`.
    recipient: String,
    state: String,
    attempts: i32,
    last_error: Option<String>,
    created_at: String,
    sent_at: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationList {
    items: Vec<Notification>,
    next_cursor: Option<String>,
}

/// `c***@example.org` / `***0187`: enough to recognise, not enough to harvest.
pub fn mask(address: &str) -> String {
    crate::domain::mask::address(address)
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
    let mut conn = state.db.acquire().await?;
    let lead = visible_loan(&mut conn, loan, &actor).await?;
    let mut rows =
        crate::notifications::store::loan_page(&mut conn, loan, page.after, page.limit + 1).await?;
    let next_cursor = crate::http::support::next_page(&mut rows, page.limit, |r| r.id.to_string());
    let key = state
        .keys
        .file_key(&state.db, lead)
        .await
        .map_err(kms_unavailable)?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let recipient = field::decrypt(
            &key,
            Location {
                table: "notifications",
                column: "recipient_enc",
                row: row.id,
            },
            &row.recipient_enc,
        )
        .map(|p| mask(&String::from_utf8_lossy(&p)))
        .map_err(|e| anyhow::anyhow!("decrypting a recipient: {e}"))?;
        items.push(Notification {
            id: row.id,
            channel: row.channel,
            template: row.template,
            recipient_kind: row.recipient_kind,
            recipient,
            state: row.state,
            attempts: row.attempts,
            last_error: row.last_error,
            created_at: rfc3339(row.created_at),
            sent_at: row.sent_at.map(rfc3339),
        });
    }
    Ok(AppJson(NotificationList { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn masking() {
        assert_eq!(
            super::mask("casey.borrower@example.org"),
            "c***@example.org"
        );
        assert_eq!(super::mask("+12025550187"), "***0187");
    }
}
