//! Deletes what has expired: finished login attempts, sessions and idempotency keys, outbox
//! events published more than a week ago (kept that long to re-drive after a broker loss,
//! docs/operations/backup-restore.md) and inbox entries older than 30 days (longer than any
//! redelivery or DLQ replay window). Every replica runs it; the deletes are idempotent, so
//! no coordination is needed.

use std::time::Duration;

use crate::state::AppState;

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
    let db = &state.db;
    let mut removed = 0;
    for sweep in [
        sqlx::query!("delete from oidc_logins where expires_at < now()").execute(db),
        sqlx::query!("delete from sessions where expires_at < now()").execute(db),
        sqlx::query!("delete from idempotency_keys where expires_at < now()").execute(db),
        sqlx::query!("delete from outbox where published_at < now() - interval '7 days'")
            .execute(db),
        sqlx::query!("delete from inbox where processed_at < now() - interval '30 days'")
            .execute(db),
    ] {
        removed += sweep.await?.rows_affected();
    }
    // An expired link's sealed token is of no use to anyone: nothing may send it again.
    removed += crate::links::ops::forget_expired_tokens(&state.db).await?;
    if removed > 0 {
        tracing::info!(
            removed,
            "expired logins, sessions, idempotency keys, outbox and inbox entries removed"
        );
    }
    Ok(removed)
}
