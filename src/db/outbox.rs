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
