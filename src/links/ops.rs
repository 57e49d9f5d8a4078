//! The upload-link operations other parts call: creating a link (with its audit row and
//! `upload_link.created` event, in the caller's transaction) and resolving a borrower's
//! token to the link it opens, with the contract's answers when it opens nothing. The
//! agent's create and list live here too, so the JSON API and the console share them.

use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::store::{self, LinkLookup, NewLinkRow};
use super::{
    LinkList, LinkState, NOT_SHOWN_AGAIN, NewLink, UploadLink, email_at, token_at, token_hash,
};
use crate::audit;
use crate::auth::Actor;
use crate::auth::session::random_token;
use crate::crypto::field;
use crate::db::{Page, outbox};
use crate::domain::rfc3339;
use crate::error::{AppError, ErrorCode, FieldError};
use crate::events::Event;
use crate::loans::ops::{visible_loan, writable_loan};
use crate::state::AppState;

/// A link to create: its recipient when not the borrower's own address, how long it lives,
/// how many files it takes.
#[derive(Clone, Copy)]
pub struct LinkSpec<'a> {
    pub email: Option<&'a str>,
    pub hours: u32,
    pub max_files: u32,
    pub language: Option<crate::domain::Language>,
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
        language,
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
            language: language.map(crate::domain::Language::as_str),
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
    /// The language chosen for the link's page and emails, if any.
    pub language: Option<String>,
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
        language,
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
        language,
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

fn link_url(state: &AppState, token: &str) -> String {
    format!(
        "{}/u/{token}",
        state
            .settings
            .server
            .public_base_url
            .as_str()
            .trim_end_matches('/')
    )
}

/// The API shape of a link for `actor`; an admin sees the recipient masked.
async fn render(
    state: &AppState,
    row: &store::LinkRow,
    token: Option<String>,
    actor: &Actor,
) -> Result<UploadLink, AppError> {
    let borrower_email = match &row.borrower_email_enc {
        Some(enc) => {
            let key = state.file_key(row.lead_id).await?;
            let plain = field::decrypt(&key, email_at(row.id), enc)
                .map_err(|e| anyhow::anyhow!("decrypting a link's borrower email: {e}"))?;
            let email = String::from_utf8_lossy(&plain).into_owned();
            Some(if actor.masks(&row.owner_subject, row.team.as_deref()) {
                crate::domain::mask::email(&email)
            } else {
                email
            })
        }
        None => None,
    };
    Ok(UploadLink {
        id: row.id,
        loan_id: row.loan_id,
        url: token
            .as_deref()
            .map(|t| link_url(state, t))
            .unwrap_or_else(|| NOT_SHOWN_AGAIN.into()),
        token,
        expires_at: rfc3339(row.expires_at),
        max_files: row.max_files,
        files_accepted: row.files_accepted,
        borrower_email,
        revoked_at: row.revoked_at.map(rfc3339),
        language: row
            .language
            .as_deref()
            .and_then(crate::domain::Language::parse),
    })
}

/// Create a borrower upload link on a loan the caller may change. The answer is the only
/// one that carries the token (and its URL): it is never stored, so it cannot be shown
/// again. Every field problem is reported at once, before anything is written.
pub async fn create(
    state: &AppState,
    actor: &Actor,
    loan_id: Uuid,
    input: NewLink,
    request_id: &str,
) -> Result<UploadLink, AppError> {
    actor.write_scope()?;
    let mut errors = Vec::new();
    let hours = input.expires_in_hours.unwrap_or(168);
    if !(1..=720).contains(&hours) {
        errors.push(FieldError {
            field: "expires_in_hours".into(),
            message: "must be between 1 and 720".into(),
        });
    }
    let max_files = input.max_files.unwrap_or(20);
    if !(1..=100).contains(&max_files) {
        errors.push(FieldError {
            field: "max_files".into(),
            message: "must be between 1 and 100".into(),
        });
    }
    let email = input
        .borrower_email
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty());
    if let Some(e) = &email
        && (e.len() > 254 || !e.contains('@') || e.contains(char::is_whitespace))
    {
        errors.push(FieldError {
            field: "borrower_email".into(),
            message: "must be an email address".into(),
        });
    }
    if !errors.is_empty() {
        return Err(AppError::validation(errors));
    }
    let mut tx = state.db.begin().await?;
    let lead_id = writable_loan(&mut tx, loan_id, actor).await?;
    let (id, token) = insert_link(
        state,
        &mut tx,
        actor,
        (loan_id, lead_id),
        &LinkSpec {
            email: email.as_deref(),
            hours,
            max_files,
            language: input.language,
        },
        request_id,
    )
    .await?;
    let row = store::fetch(&mut tx, id).await?;
    tx.commit().await?;
    render(state, &row, Some(token), actor).await
}

/// A page of the loan's links, newest first; 404 for a loan the caller cannot see. Tokens
/// are never shown again: each `url` reads [`NOT_SHOWN_AGAIN`].
pub async fn list(
    state: &AppState,
    actor: &Actor,
    loan_id: Uuid,
    page: Page<Uuid>,
) -> Result<LinkList, AppError> {
    let mut conn = state.db.acquire().await?;
    visible_loan(&mut conn, loan_id, actor).await?;
    let mut rows = store::loan_page(&mut conn, loan_id, page.after, page.limit + 1).await?;
    let next_cursor = crate::db::next_page(&mut rows, page.limit, |r| r.id.to_string());
    // Back to the pool before rendering: unwrapping a file's key may need a connection of
    // its own.
    drop(conn);
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        items.push(render(state, row, None, actor).await?);
    }
    Ok(LinkList { items, next_cursor })
}

/// Disposal (crate::retention): revoke and blank the file's links.
pub async fn blank_for_disposal(
    tx: &mut sqlx::PgConnection,
    leads: &[Uuid],
    at: time::OffsetDateTime,
) -> Result<(), sqlx::Error> {
    store::blank_for_disposal(tx, leads, at).await
}
