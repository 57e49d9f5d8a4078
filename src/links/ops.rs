//! The upload-link operations other parts call: creating a link (with its audit row and
//! `upload_link.created` event, in the caller's transaction) and resolving a borrower's
//! token to the link it opens, with the contract's answers when it opens nothing.

use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::store::{self, LinkLookup, NewLinkRow};
use super::{LinkState, email_at, token_at, token_hash};
use crate::audit;
use crate::auth::Actor;
use crate::auth::session::random_token;
use crate::crypto::field;
use crate::db::outbox;
use crate::error::{AppError, ErrorCode};
use crate::events::Event;
use crate::state::AppState;

/// A link to create: its recipient when not the borrower's own address, how long it lives,
/// how many files it takes.
#[derive(Clone, Copy)]
pub struct LinkSpec<'a> {
    pub email: Option<&'a str>,
    pub hours: u32,
    pub max_files: u32,
}

/// Write a link with its audit row and `upload_link.created` event, in `tx`; its id and
/// the token, which is never stored.
pub async fn insert_link(
    state: &AppState,
    tx: &mut PgConnection,
    actor: &Actor,
    (loan_id, lead_id): (Uuid, Uuid),
    spec: &LinkSpec<'_>,
    request_id: &str,
) -> Result<(Uuid, String), AppError> {
    let LinkSpec {
        email,
        hours,
        max_files,
    } = *spec;
    let id = Uuid::now_v7();
    let token = random_token();
    let given_email = email.is_some();
    let key = state.file_key(lead_id).await?;
    // A link goes to the borrower's own address unless another was given at creation,
    // which then becomes its only recipient (docs/api.md).
    let email = match email {
        Some(given) => Some(given.to_owned()),
        None => crate::leads::ops::email(&mut *tx, &key, lead_id).await?,
    };
    let email_enc = email
        .as_deref()
        .map(|e| field::encrypt(&key, email_at(id), e.as_bytes()));
    // Kept sealed while the link lives, only so that messages to *that link's* recipient
    // (the invitation, a rejection's way back, reminders) can carry it; wiped when the link
    // is revoked or expires. Without a recipient it is never kept.
    let token_enc = email
        .as_ref()
        .map(|_| field::encrypt(&key, token_at(id), token.as_bytes()));
    store::insert(
        &mut *tx,
        &NewLinkRow {
            id,
            loan_id,
            lead_id,
            token_hash: &token_hash(&token),
            borrower_email_enc: email_enc.as_deref(),
            hours,
            max_files,
            created_by: &actor.subject,
            token_enc: token_enc.as_deref(),
        },
    )
    .await?;
    audit::record(
        &mut *tx,
        audit::Entry {
            chain: lead_id,
            actor,
            action: "upload_link.created",
            entity_type: "upload_link",
            entity_id: id,
            request_id: Some(request_id),
            details: json!({ "loan_id": loan_id, "expires_in_hours": hours, "max_files": max_files, "borrower_email_given": given_email, "has_recipient": email.is_some() }),
        },
    )
    .await?;
    outbox::enqueue(
        &mut *tx,
        &Event::UploadLinkCreated {
            link_id: id,
            loan_id,
        },
        Some(request_id),
    )
    .await?;
    Ok((id, token))
}

/// A link that may take uploads now.
pub struct ActiveLink {
    pub id: Uuid,
    pub loan_id: Uuid,
    pub lead_id: Uuid,
    pub max_files: i32,
    pub files_accepted: i64,
    pub expires_at: OffsetDateTime,
    pub agent: String,
    /// `Active` or `Full` (a full link still shows its page; it takes no more files).
    pub state: LinkState,
}

/// The link behind `token`, or the contract's answer: 404 `link_not_found`, 410
/// `link_revoked` / `link_expired`, and — when `for_upload` — 410 `link_exhausted`.
pub async fn active_link(
    conn: &mut PgConnection,
    token: &str,
    for_upload: bool,
) -> Result<ActiveLink, AppError> {
    if for_upload {
        // An upload locks the link row until its transaction ends, so concurrent
        // announcements count the files one after another and `max_files` cannot be
        // overrun. A statement of its own: the count below must be read with a snapshot
        // taken after the lock was granted (READ COMMITTED takes one per statement).
        store::lock_by_token(&mut *conn, &token_hash(token)).await?;
    }
    let Some(LinkLookup {
        id,
        loan_id,
        lead_id,
        max_files,
        expires_at,
        revoked_at,
        files_accepted,
        agent,
    }) = store::by_token(&mut *conn, &token_hash(token)).await?
    else {
        return Err(link_error(
            StatusCode::NOT_FOUND,
            ErrorCode::LinkNotFound,
            "this upload link does not exist",
        ));
    };
    let now = OffsetDateTime::now_utc();
    let state = LinkState::at(now, revoked_at, expires_at, (files_accepted, max_files));
    match state {
        LinkState::Revoked => {
            return Err(link_error(
                StatusCode::GONE,
                ErrorCode::LinkRevoked,
                "this upload link was revoked; ask your loan officer for a new one",
            ));
        }
        LinkState::Expired => {
            return Err(link_error(
                StatusCode::GONE,
                ErrorCode::LinkExpired,
                "this upload link has expired; ask your loan officer for a new one",
            ));
        }
        LinkState::Full if for_upload => {
            return Err(link_error(
                StatusCode::GONE,
                ErrorCode::LinkExhausted,
                "this upload link has taken all the files it accepts",
            ));
        }
        LinkState::Full | LinkState::Active => {}
    }
    Ok(ActiveLink {
        id,
        loan_id,
        lead_id,
        max_files,
        files_accepted,
        expires_at,
        agent,
        state,
    })
}

fn link_error(status: StatusCode, code: ErrorCode, detail: &str) -> AppError {
    AppError::client(status, code, detail.to_owned())
}

/// Wipe the sealed tokens of expired links (housekeeping); how many.
pub async fn forget_expired_tokens(db: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    store::forget_expired_tokens(db).await
}

/// Revoke a link at once (idempotent, audited): 404 for a link the caller cannot see, 403
/// for one on a loan they may not change.
pub async fn revoke(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    request_id: &str,
) -> Result<(), AppError> {
    let mut tx = state.db.begin().await?;
    let lead = store::lead_in_scope(&mut tx, id, &actor.read_scope(), true).await?;
    let Some(lead_id) = lead else {
        return Err(AppError::not_found());
    };
    let write_scope = actor.write_scope()?;
    if store::lead_in_scope(&mut tx, id, &write_scope, false)
        .await?
        .is_none()
    {
        return Err(AppError::forbidden());
    }
    // The sealed token goes with the revocation: nothing can send this link again.
    store::revoke(&mut tx, id).await?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: lead_id,
            actor,
            action: "upload_link.revoked",
            entity_type: "upload_link",
            entity_id: id,
            request_id: Some(request_id),
            details: serde_json::json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
