//! Deletes what has expired: finished login attempts, sessions and idempotency keys. Every
//! replica runs it; the deletes are idempotent, so no coordination is needed.

use std::time::Duration;

use crate::app::AppState;

const EVERY: Duration = Duration::from_secs(600);

pub async fn run(state: AppState) {
    // The first round after one period: start-up has enough to do.
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(e) = sweep(&state).await {
            tracing::debug!(error = %e, "housekeeping skipped this round");
        }
    }
}

pub async fn sweep(state: &AppState) -> Result<u64, sqlx::Error> {
    let mut removed = 0;
    for statement in [
        // language=PostgreSQL
        "delete from oidc_logins where expires_at < now()",
        // language=PostgreSQL
        "delete from sessions where expires_at < now()",
        // language=PostgreSQL
        "delete from idempotency_keys where expires_at < now()",
    ] {
        removed += sqlx::query(statement)
            .execute(&state.db)
            .await?
            .rows_affected();
    }
    if removed > 0 {
        tracing::info!(
            removed,
            "expired logins, sessions and idempotency keys removed"
        );
    }
    Ok(removed)
}
