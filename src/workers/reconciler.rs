//! The document reconciler (DESIGN.md §2), safe on every replica at once (`SKIP LOCKED`):
//! - an `awaiting_upload` document past its URL expiry whose object exists in quarantine is
//!   completed — the borrower's browser died before saying so; a financial document a
//!   borrower uploaded is never deleted by housekeeping — and one with no object `expired`;
//! - an `uploaded` document that made no progress for `STUCK_AFTER` is published again;
//! - a decided document's quarantine copy that a crash left behind is deleted.

use std::time::Duration;

use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde_json::json;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{Actor, Role};
use crate::db::{audit, outbox};

const EVERY: Duration = Duration::from_secs(60);
const STUCK_AFTER_SECS: f64 = 300.0;

fn reconciler() -> Actor {
    Actor {
        subject: "system:reconciler".into(),
        display_name: "Reconciler".into(),
        email: None,
        roles: vec![Role::Admin],
        team: None,
        auth_time: None,
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub completed: u64,
    pub expired: u64,
    pub republished: u64,
    pub purged: u64,
}

pub async fn run(state: AppState) {
    // The first round after one period: start-up has enough to do.
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match sweep(&state).await {
            Ok(swept) if swept != Swept::default() => {
                tracing::info!(?swept, "documents reconciled")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "reconciler round failed; next round retries")
            }
        }
    }
}

pub async fn sweep(state: &AppState) -> anyhow::Result<Swept> {
    let mut swept = Swept::default();
    let actor = reconciler();
    loop {
        let mut tx = state.db.begin().await?;
        // language=PostgreSQL
        let due: Option<(Uuid, Uuid, Uuid, String)> = sqlx::query_as(
            "select id, loan_id, lead_id, quarantine_key from documents
              where state = 'awaiting_upload' and upload_expires_at < now()
              order by upload_expires_at limit 1 for update skip locked",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, loan_id, lead_id, key)) = due else {
            break;
        };
        let exists = match state
            .storage
            .quarantine
            .head(&ObjectPath::from(key.as_str()))
            .await
        {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            // Storage unreachable: decide nothing now; never expire a file we could not see.
            Err(e) => return Err(e.into()),
        };
        let (new_state, action) = if exists {
            ("uploaded", "document.uploaded")
        } else {
            ("expired", "document.expired")
        };
        // language=PostgreSQL
        sqlx::query("update documents set state = $2, updated_at = now() where id = $1")
            .bind(id)
            .bind(new_state)
            .execute(&mut *tx)
            .await?;
        audit::record(
            &mut tx,
            audit::Entry {
                chain: lead_id,
                actor: &actor,
                action,
                entity_type: "document",
                entity_id: id,
                request_id: None,
                details: json!({ "by": "reconciler" }),
            },
        )
        .await?;
        if exists {
            outbox::enqueue(
                &mut tx,
                "doc.uploaded",
                json!({ "documentId": id, "loanId": loan_id }),
                None,
            )
            .await?;
            swept.completed += 1;
        } else {
            swept.expired += 1;
        }
        tx.commit().await?;
    }
    let mut tx = state.db.begin().await?;
    // language=PostgreSQL
    let stuck: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "select id, loan_id from documents
          where state = 'uploaded' and updated_at < now() - make_interval(secs => $1)
          for update skip locked",
    )
    .bind(STUCK_AFTER_SECS)
    .fetch_all(&mut *tx)
    .await?;
    for (id, loan_id) in stuck {
        // language=PostgreSQL
        sqlx::query("update documents set updated_at = now() where id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        outbox::enqueue(
            &mut tx,
            "doc.uploaded",
            json!({ "documentId": id, "loanId": loan_id }),
            None,
        )
        .await?;
        swept.republished += 1;
    }
    tx.commit().await?;
    // Quarantine copies left by a crash between a decision's commit and its clean-up. A
    // decided document never needs its quarantine copy again, so there is no grace period.
    // language=PostgreSQL
    let leftovers: Vec<Uuid> = sqlx::query_scalar(
        "select id from documents
          where not quarantine_purged and state in ('available', 'rejected', 'expired', 'deleted')
          limit 500",
    )
    .fetch_all(&state.db)
    .await?;
    for id in leftovers {
        crate::workers::pipeline::purge_quarantine(state, id).await;
        swept.purged += 1;
    }
    Ok(swept)
}
