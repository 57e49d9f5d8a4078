//! The notification operations the routes call: the borrower's unsubscribe (document
//! reminders only) through the token of a reminder's link.

use serde_json::json;
use uuid::Uuid;

use super::store;
use crate::auth::Actor;
use crate::error::AppError;
use crate::state::AppState;

/// The lead behind an unsubscribe token; 404 when the token is unknown.
async fn lead_of(conn: &mut sqlx::PgConnection, token: &str) -> Result<Uuid, AppError> {
    store::lead_of_unsubscribe_token(conn, &crate::crypto::token_hash(token))
        .await?
        .ok_or_else(AppError::not_found)
}

/// Whether the borrower behind `token` is unsubscribed from reminders already.
pub async fn is_unsubscribed(state: &AppState, token: &str) -> Result<bool, AppError> {
    let mut conn = state.db.acquire().await?;
    let lead = lead_of(&mut conn, token).await?;
    crate::leads::ops::email_opted_out(&mut conn, lead).await
}

/// Unsubscribe the borrower behind `token` from document reminders, audited once;
/// idempotent.
pub async fn unsubscribe(state: &AppState, token: &str, request_id: &str) -> Result<(), AppError> {
    let mut tx = state.db.begin().await?;
    let lead = lead_of(&mut tx, token).await?;
    if !crate::leads::ops::email_opted_out(&mut tx, lead).await? {
        let borrower = Actor::borrower("borrower".into());
        crate::leads::ops::email_opt_out(
            &mut tx,
            lead,
            &borrower,
            json!({ "scope": "reminders" }),
            request_id,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
