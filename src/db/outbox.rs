//! The transactional outbox: events are rows written in the change's own transaction; the
//! relay publishes them. Payloads carry ids and states only.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

pub async fn enqueue(
    tx: &mut PgConnection,
    topic: &str,
    payload: Value,
    request_id: Option<&str>,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    // language=PostgreSQL
    sqlx::query("insert into outbox (id, topic, payload, headers) values ($1, $2, $3, $4)")
        .bind(id)
        .bind(topic)
        .bind(payload)
        .bind(serde_json::json!({ "request_id": request_id }))
        .execute(&mut *tx)
        .await?;
    Ok(id)
}

/// Mark the events published within `minutes` before the newest event as unpublished, so
/// the relay sends them again (`admin outbox-redrive`). The window is anchored on the newest
/// event, not the clock: after a restore, "now" is long after the recovery point.
pub async fn redrive(db: &sqlx::PgPool, minutes: u32) -> Result<u64, sqlx::Error> {
    // language=PostgreSQL
    Ok(sqlx::query(
        "update outbox set published_at = null
          where published_at is not null
            and created_at >= (select max(created_at) from outbox) - make_interval(mins => $1)",
    )
    .bind(i32::try_from(minutes).unwrap_or(i32::MAX))
    .execute(db)
    .await?
    .rows_affected())
}
