//! The document reconciler (docs/security.md), safe on every replica at once (`SKIP LOCKED`):
//! - an `awaiting_upload` document past its URL expiry whose object exists in quarantine is
//!   completed — the borrower's browser died before saying so; a financial document a
//!   borrower uploaded is never deleted by housekeeping — and one with no object `expired`;
//! - an `uploaded` document that made no progress for `STUCK_AFTER` is published again;
//! - a decided document's quarantine copy that a crash left behind is deleted.

use std::time::Duration;

use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde_json::json;
use time::OffsetDateTime;

use super::store;
use crate::audit;
use crate::auth::Actor;
use crate::db::outbox;
use crate::domain::DocumentState;
use crate::events::Event;
use crate::state::AppState;

const EVERY: Duration = Duration::from_secs(60);
const STUCK_AFTER_SECS: f64 = 300.0;

fn reconciler() -> Actor {
    Actor::system("reconciler", "Reconciler")
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub completed: u64,
    pub expired: u64,
    /// Objects written through a link after it was revoked: rejected, kept in quarantine.
    pub link_revoked: u64,
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

/// What becomes of an abandoned upload (docs/api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The object exists and was written while the upload was allowed: process it.
    Complete,
    /// No object: the upload never happened.
    Expire,
    /// The object was written after its link was revoked.
    LinkRevoked,
}

impl Outcome {
    /// `written_at` is the object's last modification in unix seconds (none: no object),
    /// `revoked_at` the link's revocation. Object stores may keep whole seconds: a write in
    /// the second of the revocation counts as after it (fail closed — kept, not lost).
    pub fn of(written_at: Option<i64>, revoked_at: Option<OffsetDateTime>) -> Self {
        let Some(written_at) = written_at else {
            return Outcome::Expire;
        };
        match revoked_at {
            Some(revoked_at) if written_at >= revoked_at.unix_timestamp() => Outcome::LinkRevoked,
            _ => Outcome::Complete,
        }
    }
}

/// Uploaded documents whose processing seems lost get their event again; how many.
async fn republish_stuck(state: &AppState) -> anyhow::Result<u64> {
    let mut republished = 0;
    let mut tx = state.db.begin().await?;
    let stuck = store::stuck_uploaded(&mut tx, STUCK_AFTER_SECS).await?;
    for store::DocumentOfLoan { id, loan_id } in stuck {
        store::touch(&mut tx, id).await?;
        outbox::enqueue(
            &mut tx,
            &Event::DocUploaded {
                document_id: id,
                loan_id,
            },
            None,
        )
        .await?;
        republished += 1;
    }
    tx.commit().await?;
    Ok(republished)
}

/// When the quarantine copy of an expired announcement was written, if it was: `None` when
/// there is none. An unreachable store is an error: never expire a file we could not see.
async fn written_at(state: &AppState, quarantine_key: &str) -> anyhow::Result<Option<i64>> {
    match state
        .storage
        .quarantine
        .head(&ObjectPath::from(quarantine_key))
        .await
    {
        Ok(meta) => Ok(Some(meta.last_modified.timestamp())),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub async fn sweep(state: &AppState) -> anyhow::Result<Swept> {
    let mut swept = Swept::default();
    let actor = reconciler();
    loop {
        let mut tx = state.db.begin().await?;
        let due = store::next_expired_upload(&mut tx).await?;
        let Some(store::ExpiredUpload {
            id,
            loan_id,
            lead_id,
            quarantine_key: key,
            revoked_at,
        }) = due
        else {
            break;
        };
        let outcome = Outcome::of(written_at(state, &key).await?, revoked_at);
        let (new_state, reason, action) = match outcome {
            Outcome::Complete => (DocumentState::Uploaded, None, "document.uploaded"),
            Outcome::Expire => (DocumentState::Expired, None, "document.expired"),
            Outcome::LinkRevoked => (
                DocumentState::Rejected,
                Some("link_revoked"),
                "document.rejected",
            ),
        };
        store::set_state_with_reason(&mut tx, id, new_state, reason).await?;
        audit::record(
            &mut tx,
            audit::Entry {
                chain: lead_id,
                actor: &actor,
                action,
                entity_type: "document",
                entity_id: id,
                request_id: None,
                details: json!({ "by": "reconciler", "reason": reason }),
            },
        )
        .await?;
        if outcome == Outcome::LinkRevoked {
            // Kept in quarantine, unread, for a person to look at: a revoked link's URL was
            // used after the revocation (a leaked link, or a borrower too late).
            tracing::warn!(
                document_id = %id,
                "an upload arrived after its link was revoked; rejected link_revoked and kept in quarantine"
            );
            swept.link_revoked += 1;
        } else if outcome == Outcome::Complete {
            outbox::enqueue(
                &mut tx,
                &Event::DocUploaded {
                    document_id: id,
                    loan_id,
                },
                None,
            )
            .await?;
            swept.completed += 1;
        } else {
            swept.expired += 1;
        }
        tx.commit().await?;
    }
    swept.republished = republish_stuck(state).await?;
    // Quarantine copies left by a crash between a decision's commit and its clean-up. A
    // decided document never needs its quarantine copy again, so there is no grace period.
    let leftovers = store::quarantine_leftovers(&state.db, 500).await?;
    for id in leftovers {
        crate::documents::worker::purge_quarantine(state, id).await;
        swept.purged += 1;
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_written_after_its_link_was_revoked_is_not_completed() {
        let revoked = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(Outcome::of(None, Some(revoked)), Outcome::Expire);
        assert_eq!(
            Outcome::of(Some(1_799_999_999), Some(revoked)),
            Outcome::Complete
        );
        assert_eq!(
            Outcome::of(Some(1_800_000_000), Some(revoked)),
            Outcome::LinkRevoked
        );
        assert_eq!(
            Outcome::of(Some(1_800_000_500), Some(revoked)),
            Outcome::LinkRevoked
        );
        assert_eq!(Outcome::of(Some(1_800_000_500), None), Outcome::Complete);
    }
}
