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

/// What was sent about a loan the caller can see, newest first; recipients masked.
pub async fn for_loan(
    state: &AppState,
    actor: &Actor,
    loan: Uuid,
    page: crate::db::Page<Uuid>,
) -> Result<super::NotificationList, AppError> {
    let mut conn = state.db.acquire().await?;
    let lead = crate::loans::ops::visible_loan(&mut conn, loan, actor).await?;
    let mut rows = store::loan_page(&mut conn, loan, page.after, page.limit + 1).await?;
    let next_cursor = crate::db::next_page(&mut rows, page.limit, |r| r.id.to_string());
    let key = state.file_key(lead).await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        // A disposed notification keeps its row without its recipient.
        let recipient = if row.recipient_enc.is_empty() {
            "(disposed)".to_owned()
        } else {
            crate::crypto::field::decrypt(
                &key,
                crate::crypto::field::Location {
                    table: "notifications",
                    column: "recipient_enc",
                    row: row.id,
                },
                &row.recipient_enc,
            )
            .map(|p| super::mask(&String::from_utf8_lossy(&p)))
            .map_err(|e| anyhow::anyhow!("decrypting a recipient: {e}"))?
        };
        items.push(super::Notification {
            id: row.id,
            channel: row.channel,
            template: row.template,
            recipient_kind: row.recipient_kind,
            recipient,
            state: row.state.as_str().to_owned(),
            attempts: row.attempts,
            last_error: row.last_error,
            created_at: crate::domain::rfc3339(row.created_at),
            sent_at: row.sent_at.map(crate::domain::rfc3339),
        });
    }
    Ok(super::NotificationList { items, next_cursor })
}

/// Disposal (crate::retention): blank what this aggregate keeps of the file.
pub async fn blank_for_disposal(
    tx: &mut sqlx::PgConnection,
    leads: &[Uuid],
) -> Result<(), sqlx::Error> {
    store::blank_for_disposal(tx, leads).await
}

/// Record-level disposal (crate::retention): the recipients of notifications created more
/// than `days` before `at`, of files no hold keeps, in batches of `batch`; how many.
pub async fn dispose_sent(
    db: &sqlx::PgPool,
    at: time::OffsetDateTime,
    days: i32,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let mut total = 0;
    loop {
        let n = store::dispose_sent(&mut conn, at, days, batch).await?;
        total += n;
        if n < batch.unsigned_abs() {
            return Ok(total);
        }
    }
}
