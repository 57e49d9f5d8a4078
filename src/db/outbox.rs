//! The transactional outbox: events are rows written in the change's own transaction; the
//! relay publishes them. Payloads carry ids and states only.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::events::{EVENT_VERSION, Event};

/// Record `event` in the caller's transaction; the relay publishes it after the commit.
pub async fn enqueue(
    tx: &mut PgConnection,
    event: &Event,
    request_id: Option<&str>,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "insert into outbox (id, topic, payload, headers) values ($1, $2, $3, $4)",
        id,
        event.topic(),
        event.payload(),
        serde_json::json!({ "request_id": request_id, "version": EVENT_VERSION })
    )
    .execute(&mut *tx)
    .await?;
    Ok(id)
}

/// Mark the events published within `minutes` before the newest event as unpublished, so
/// the relay sends them again (`admin outbox-redrive`). The window is anchored on the newest
/// event, not the clock: after a restore, "now" is long after the recovery point.
pub async fn redrive(db: &sqlx::PgPool, minutes: u32) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "update outbox set published_at = null
          where published_at is not null
            and created_at >= (select max(created_at) from outbox) - make_interval(mins => $1)",
        i32::try_from(minutes).unwrap_or(i32::MAX)
    )
    .execute(db)
    .await?
    .rows_affected())
}
