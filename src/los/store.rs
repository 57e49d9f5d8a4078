//! The only code that runs SQL on `los_webhook_events`: each milestone event the LOS
//! delivered, claimed once by its id, with what became of it.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

/// Claim a webhook event by its id; false when it was delivered before. Concurrent
/// deliveries of one event wait here for the first to commit, then find it taken.
pub async fn claim_event(
    tx: &mut PgConnection,
    event_id: &str,
    los_loan_id: &str,
    milestone: &str,
    occurred_at: Option<OffsetDateTime>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        "insert into los_webhook_events (event_id, los_loan_id, milestone, outcome, occurred_at)
         values ($1, $2, $3, 'pending', $4) on conflict (event_id) do nothing",
        event_id,
        los_loan_id,
        milestone,
        occurred_at
    )
    .execute(tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn set_outcome(
    tx: &mut PgConnection,
    event_id: &str,
    outcome: &str,
    loan: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update los_webhook_events set outcome = $2, loan_id = $3 where event_id = $1",
        event_id,
        outcome,
        loan
    )
    .execute(tx)
    .await?;
    Ok(())
}
