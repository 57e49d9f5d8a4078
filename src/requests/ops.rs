//! The needs-list operations other parts call: a request's timeline and state moves (in the
//! caller's transaction), the pipeline's "a file arrived", and creating a request.

use axum::http::StatusCode;
use serde_json::json;
use sqlx::PgConnection;
use time::Date;
use uuid::Uuid;

use super::store::{self, NewEvent, NewRequestRow, RequestRow};
use super::{DocumentRequest, DocumentRequestList, RequestState, TimelineItem};
use crate::audit;
use crate::auth::Actor;
use crate::crypto::field::{self, Location};
use crate::db::{Page, next_page, outbox};
use crate::domain::DocType;
use crate::domain::rfc3339;
use crate::error::{AppError, ErrorCode};
use crate::events::Event;
use crate::state::AppState;

pub fn at<'a>(table: &'a str, column: &'a str, row: Uuid) -> Location<'a> {
    Location { table, column, row }
}

/// A request's note and reason in the clear: what the borrower's page shows.
pub struct PlainRequest {
    pub note: String,
    pub reason: Option<String>,
}

pub fn decrypt_request(key: &[u8; 32], row: &RequestRow) -> Result<PlainRequest, AppError> {
    let open = |column: &str, bytes: &[u8]| -> Result<String, AppError> {
        let plain = field::decrypt(key, at("document_requests", column, row.id), bytes)
            .map_err(|e| anyhow::anyhow!("decrypting a request's {column}: {e}"))?;
        Ok(String::from_utf8_lossy(&plain).into_owned())
    };
    Ok(PlainRequest {
        note: open("note_enc", &row.note_enc)?,
        reason: row
            .reason_enc
            .as_deref()
            .map(|r| open("reason_enc", r))
            .transpose()?,
    })
}

/// A timeline entry: what happened, by whom (a display name), with which document, and the
/// reason shown to the borrower (sealed at rest).
pub struct Entry<'a> {
    pub event: &'a str,
    pub by: &'a str,
    pub document: Option<Uuid>,
    pub reason: Option<&'a str>,
}

/// Append to a request's timeline (in the caller's transaction).
pub async fn record_event(
    conn: &mut PgConnection,
    key: &[u8; 32],
    request: Uuid,
    entry: &Entry<'_>,
) -> Result<(), sqlx::Error> {
    let id = Uuid::now_v7();
    let reason_enc = entry.reason.map(|r| {
        field::encrypt(
            key,
            at("document_request_events", "reason_enc", id),
            r.as_bytes(),
        )
    });
    store::insert_event(
        conn,
        &NewEvent {
            id,
            request,
            event: entry.event,
            by: entry.by,
            document: entry.document,
            reason_enc: reason_enc.as_deref(),
        },
    )
    .await
}

/// Move a request to `state` with the entry's reason (encrypted; `None` clears it) and the
/// timeline entry.
pub async fn move_request(
    conn: &mut PgConnection,
    key: &[u8; 32],
    request: Uuid,
    state: RequestState,
    entry: &Entry<'_>,
) -> Result<(), sqlx::Error> {
    let reason_enc = entry.reason.map(|r| {
        field::encrypt(
            key,
            at("document_requests", "reason_enc", request),
            r.as_bytes(),
        )
    });
    store::set_state(conn, request, state, reason_enc.as_deref()).await?;
    record_event(conn, key, request, entry).await
}

/// A file for `request` passed the pipeline: an outstanding or rejected request is now
/// `received`. Called by the pipeline in its outcome transaction.
pub async fn file_received(
    conn: &mut PgConnection,
    key: &[u8; 32],
    request: Uuid,
    document: Uuid,
    by: &str,
) -> Result<(), sqlx::Error> {
    let current = store::state_for_update(conn, request).await?;
    let received = Entry {
        event: "received",
        by,
        document: Some(document),
        reason: None,
    };
    match current {
        Some(current) if current.awaits_borrower() => {
            move_request(conn, key, request, RequestState::Received, &received).await
        }
        // Already received, accepted or not applicable: the file is on the timeline only.
        Some(_) => record_event(conn, key, request, &received).await,
        None => Ok(()),
    }
}

/// What an agent asks the borrower for: a document type, a note, a due date.
#[derive(Clone, Copy)]
pub struct Ask<'a> {
    pub doc_type: DocType,
    pub note: &'a str,
    pub due_date: Option<Date>,
}

/// Write a request with its first timeline entry, audit row and event, in `tx`.
pub async fn insert_request(
    state: &AppState,
    tx: &mut PgConnection,
    actor: &Actor,
    (loan_id, lead_id): (Uuid, Uuid),
    ask: &Ask<'_>,
    request_id: &str,
) -> Result<Uuid, AppError> {
    let Ask {
        doc_type,
        note,
        due_date,
    } = *ask;
    let key = state.file_key(lead_id).await?;
    let id = Uuid::now_v7();
    let note_enc = field::encrypt(
        &key,
        at("document_requests", "note_enc", id),
        note.as_bytes(),
    );
    store::insert(
        &mut *tx,
        &NewRequestRow {
            id,
            loan_id,
            lead_id,
            doc_type,
            note_enc: &note_enc,
            due_date,
            created_by: &actor.subject,
        },
    )
    .await?;
    let requested = Entry {
        event: "requested",
        by: &actor.display_name,
        document: None,
        reason: None,
    };
    record_event(&mut *tx, &key, id, &requested).await?;
    audit::record(
        &mut *tx,
        audit::Entry {
            chain: lead_id,
            actor,
            action: "document_request.created",
            entity_type: "document_request",
            entity_id: id,
            request_id: Some(request_id),
            details: json!({ "loan_id": loan_id, "doc_type": doc_type.as_str(), "due_date": due_date.map(|d| d.to_string()) }),
        },
    )
    .await?;
    outbox::enqueue(
        &mut *tx,
        &Event::DocumentRequestCreated {
            request_id: id,
            loan_id,
            doc_type,
        },
        Some(request_id),
    )
    .await?;
    Ok(id)
}

/// The loan's requests as its borrower's page shows them, in the order they were made.
pub async fn for_borrower(
    conn: &mut PgConnection,
    key: &[u8; 32],
    loan: Uuid,
) -> Result<Vec<super::PublicRequest>, AppError> {
    store::loan_requests(conn, loan)
        .await?
        .iter()
        .map(|row| super::PublicRequest::from_row(key, row))
        .collect()
}

/// The borrower says a request of their loan does not apply to them (`comment` already
/// checked): `outstanding` or `rejected` becomes `not_applicable`, audited, with its
/// event; asking again changes nothing; any other state is 409. In the caller's
/// transaction, which resolved the link (`loan`, `lead`) and commits.
pub async fn mark_not_applicable(
    state: &AppState,
    tx: &mut PgConnection,
    borrower: &Actor,
    (loan, lead): (Uuid, Uuid),
    (request, comment): (Uuid, &str),
    request_id: &str,
) -> Result<super::PublicRequest, AppError> {
    let current = store::state_in_loan_for_update(&mut *tx, request, loan).await?;
    // Another loan's request is simply not found through this link.
    let current = current.ok_or_else(AppError::not_found)?;
    let key = state.file_key(lead).await?;
    match current {
        current if current.awaits_borrower() => {
            let entry = Entry {
                event: "not_applicable",
                by: "Borrower",
                document: None,
                reason: Some(comment),
            };
            move_request(&mut *tx, &key, request, RequestState::NotApplicable, &entry).await?;
            audit::record(
                &mut *tx,
                audit::Entry {
                    chain: lead,
                    actor: borrower,
                    action: "document_request.not_applicable",
                    entity_type: "document_request",
                    entity_id: request,
                    request_id: Some(request_id),
                    details: json!({ "loan_id": loan }),
                },
            )
            .await?;
            outbox::enqueue(
                &mut *tx,
                &Event::DocumentRequestNotApplicable {
                    request_id: request,
                    loan_id: loan,
                },
                Some(request_id),
            )
            .await?;
        }
        RequestState::NotApplicable => {}
        other => {
            return Err(AppError::client(
                StatusCode::CONFLICT,
                ErrorCode::InvalidState,
                format!("this request is already {}", other.as_str()),
            ));
        }
    }
    let row = store::loan_requests(&mut *tx, loan)
        .await?
        .into_iter()
        .find(|r| r.id == request)
        .ok_or_else(|| anyhow::anyhow!("the request vanished"))?;
    super::PublicRequest::from_row(&key, &row)
}

/// The requests as `actor` may see them, with their timelines (notes and reasons left out
/// for callers who see masked PII only).
pub async fn render_all(
    state: &AppState,
    conn: &mut PgConnection,
    rows: &[RequestRow],
    actor: &Actor,
) -> Result<Vec<DocumentRequest>, AppError> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let owner = crate::loans::ops::owner_and_team(&mut *conn, first.loan_id).await?;
    let masked = actor.masks(&owner.owner_subject, owner.team.as_deref());
    let key = state.file_key(first.lead_id).await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let events = store::events(&mut *conn, &ids).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let plain = (!masked).then(|| decrypt_request(&key, row)).transpose()?;
        let mut timeline = Vec::new();
        for e in events.iter().filter(|e| e.request_id == row.id) {
            let reason = match (&e.reason_enc, masked) {
                (Some(bytes), false) => Some(
                    String::from_utf8_lossy(
                        &field::decrypt(
                            &key,
                            at("document_request_events", "reason_enc", e.id),
                            bytes,
                        )
                        .map_err(|err| anyhow::anyhow!("decrypting a timeline reason: {err}"))?,
                    )
                    .into_owned(),
                ),
                _ => None,
            };
            timeline.push(TimelineItem {
                at: rfc3339(e.at),
                event: e.event.clone(),
                by: e.by_label.clone(),
                document_id: e.document_id,
                reason,
            });
        }
        out.push(DocumentRequest {
            id: row.id,
            loan_id: row.loan_id,
            doc_type: row.doc_type.clone(),
            note: plain.as_ref().map(|p| p.note.clone()),
            due_date: row.due_date.map(|d| d.to_string()),
            state: row.state.as_str().to_owned(),
            reason: plain.and_then(|p| p.reason),
            timeline,
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
        });
    }
    Ok(out)
}

/// `due_date` as a date, not in the past.
fn parse_due_date(
    raw: Option<&str>,
    errors: &mut Vec<crate::error::FieldError>,
) -> Option<time::Date> {
    let raw = raw?;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    match time::Date::parse(raw, &format) {
        Ok(d) if d >= time::OffsetDateTime::now_utc().date() => Some(d),
        Ok(_) => {
            errors.push(crate::error::FieldError {
                field: "due_date".into(),
                message: "must not be in the past".into(),
            });
            None
        }
        Err(_) => {
            errors.push(crate::error::FieldError {
                field: "due_date".into(),
                message: "must be a date as YYYY-MM-DD".into(),
            });
            None
        }
    }
}

/// Ask the borrower for a document type with the note and due date as the caller wrote
/// them (`YYYY-MM-DD`): 422 for a note over 1000 characters or a date that is malformed or
/// in the past, then as [`create`]. The API and the console both come through here.
pub async fn ask(
    state: &AppState,
    actor: &Actor,
    loan_id: Uuid,
    doc_type: crate::domain::DocType,
    (note, due_date): (&str, Option<&str>),
    request_id: &str,
) -> Result<DocumentRequest, AppError> {
    let mut errors = Vec::new();
    super::check_text("note", note, false, &mut errors);
    let due_date = parse_due_date(due_date, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::validation(errors));
    }
    let ask = Ask {
        doc_type,
        note: note.trim(),
        due_date,
    };
    create(state, actor, loan_id, &ask, request_id).await
}

/// Ask the borrower for a document type (`note` and `due_date` already checked): the
/// request, its first timeline entry, audit row and event, for a loan the caller may change.
pub async fn create(
    state: &AppState,
    actor: &Actor,
    loan_id: Uuid,
    ask: &Ask<'_>,
    request_id: &str,
) -> Result<DocumentRequest, AppError> {
    let mut tx = state.db.begin().await?;
    let lead_id = crate::loans::ops::writable_loan(&mut tx, loan_id, actor).await?;
    let id = insert_request(state, &mut tx, actor, (loan_id, lead_id), ask, request_id).await?;
    let rows: Vec<RequestRow> = store::loan_requests(&mut tx, loan_id)
        .await?
        .into_iter()
        .filter(|r| r.id == id)
        .collect();
    let rendered = render_all(state, &mut tx, &rows, actor).await?;
    tx.commit().await?;
    rendered
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the request just written is missing").into())
}

/// The loan's needs list with states and timelines, oldest first.
pub async fn list(
    state: &AppState,
    actor: &Actor,
    loan_id: Uuid,
    page: Page<Uuid>,
) -> Result<DocumentRequestList, AppError> {
    let mut conn = state.db.acquire().await?;
    crate::loans::ops::visible_loan(&mut conn, loan_id, actor).await?;
    // A loan's needs list is short (one request per document asked for): paged in memory.
    let mut rows: Vec<_> = store::loan_requests(&mut conn, loan_id)
        .await?
        .into_iter()
        .filter(|r| page.after.is_none_or(|after| r.id > after))
        .take(page.limit as usize + 1)
        .collect();
    let next_cursor = next_page(&mut rows, page.limit, |r| r.id.to_string());
    let items = render_all(state, &mut conn, &rows, actor).await?;
    Ok(DocumentRequestList { items, next_cursor })
}

/// The document type a request of `loan` asks for; `None` when it is not that loan's.
pub async fn doc_type_in_loan(
    conn: &mut PgConnection,
    request: Uuid,
    loan: Uuid,
) -> Result<Option<String>, AppError> {
    Ok(store::doc_type_in_loan(conn, request, loan).await?)
}

/// The requests were reminded at `now` (in the reminder round's transaction).
pub async fn mark_reminded(
    conn: &mut PgConnection,
    requests: &[Uuid],
    now: time::OffsetDateTime,
) -> Result<(), AppError> {
    Ok(store::mark_reminded(conn, requests, now).await?)
}

/// Disposal (crate::retention): blank what this aggregate keeps of the file.
pub async fn blank_for_disposal(
    tx: &mut sqlx::PgConnection,
    leads: &[Uuid],
) -> Result<(), sqlx::Error> {
    store::blank_for_disposal(tx, leads).await
}
