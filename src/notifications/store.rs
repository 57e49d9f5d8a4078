//! The only code that runs SQL on `notifications` and `unsubscribe_tokens` (the notifier's
//! own statements are still being moved here: docs/architecture.md).

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

/// The lead an unsubscribe token belongs to.
pub async fn lead_of_unsubscribe_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<Uuid>, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_scalar("select lead_id from unsubscribe_tokens where token_hash = $1")
        .bind(token_hash)
        .fetch_optional(conn)
        .await
}

#[derive(Debug, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub channel: String,
    pub template: String,
    pub recipient_kind: String,
    pub recipient_enc: Vec<u8>,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
    pub sent_at: Option<OffsetDateTime>,
}

/// Up to `fetch` notifications about a loan, newest first, before `before`.
pub async fn loan_page(
    conn: &mut PgConnection,
    loan: Uuid,
    before: Option<Uuid>,
    fetch: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_as(
        "select id, lead_id, channel, template, recipient_kind, recipient_enc, state, attempts, last_error, created_at, sent_at
           from notifications where loan_id = $1 and ($2::uuid is null or id < $2)
          order by id desc limit $3",
    )
    .bind(loan)
    .bind(before)
    .bind(fetch)
    .fetch_all(conn)
    .await
}
