//! The only code that runs SQL on `document_requests` and `document_request_events`.

use sqlx::PgConnection;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::domain::DocType;

#[derive(Debug)]
pub struct RequestRow {
    pub id: Uuid,
    pub loan_id: Uuid,
    pub lead_id: Uuid,
    pub doc_type: String,
    pub note_enc: Vec<u8>,
    pub due_date: Option<Date>,
    pub state: super::RequestState,
    pub reason_enc: Option<Vec<u8>>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// The loan's requests in the order they were made.
pub async fn loan_requests(
    conn: &mut PgConnection,
    loan: Uuid,
) -> Result<Vec<RequestRow>, sqlx::Error> {
    sqlx::query_as!(RequestRow, "select id, loan_id, lead_id, doc_type, note_enc, due_date, state, reason_enc, created_at, updated_at
           from document_requests where loan_id = $1 order by id", loan)
    .fetch_all(conn)
    .await
}

/// A request's state, locked for the rest of the caller's transaction.
pub async fn state_for_update(
    conn: &mut PgConnection,
    request: Uuid,
) -> Result<Option<super::RequestState>, sqlx::Error> {
    sqlx::query_scalar!(
        "select state from document_requests where id = $1 for update",
        request
    )
    .fetch_optional(conn)
    .await
}

pub async fn set_state(
    conn: &mut PgConnection,
    request: Uuid,
    state: super::RequestState,
    reason_enc: Option<&[u8]>,
) -> Result<(), sqlx::Error> {
    sqlx::query!("update document_requests set state = $2, reason_enc = $3, updated_at = now() where id = $1", request, state as super::RequestState, reason_enc)
    .execute(conn)
    .await?;
    Ok(())
}

/// A timeline entry (its reason sealed by the caller).
pub struct NewEvent<'a> {
    pub id: Uuid,
    pub request: Uuid,
    pub event: &'a str,
    pub by: &'a str,
    pub document: Option<Uuid>,
    pub reason_enc: Option<&'a [u8]>,
}

pub async fn insert_event(
    conn: &mut PgConnection,
    event: &NewEvent<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!("insert into document_request_events (id, request_id, event, by_label, document_id, reason_enc)
         values ($1, $2, $3, $4, $5, $6)", event.id, event.request, event.event, event.by, event.document, event.reason_enc)
    .execute(conn)
    .await?;
    Ok(())
}

/// A new request's row (its note sealed by the caller).
pub struct NewRequestRow<'a> {
    pub id: Uuid,
    pub loan_id: Uuid,
    pub lead_id: Uuid,
    pub doc_type: DocType,
    pub note_enc: &'a [u8],
    pub due_date: Option<Date>,
    pub created_by: &'a str,
}

pub async fn insert(
    conn: &mut PgConnection,
    request: &NewRequestRow<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!("insert into document_requests (id, loan_id, lead_id, doc_type, note_enc, due_date, created_by)
         values ($1, $2, $3, $4, $5, $6, $7)", request.id, request.loan_id, request.lead_id, request.doc_type.as_str(), request.note_enc, request.due_date, request.created_by)
    .execute(conn)
    .await?;
    Ok(())
}

/// A request's state if it belongs to `loan`, locked for the rest of the transaction.
pub async fn state_in_loan_for_update(
    conn: &mut PgConnection,
    request: Uuid,
    loan: Uuid,
) -> Result<Option<super::RequestState>, sqlx::Error> {
    sqlx::query_scalar!(
        "select state from document_requests where id = $1 and loan_id = $2 for update",
        request,
        loan
    )
    .fetch_optional(conn)
    .await
}

#[derive(Debug)]
pub struct EventRow {
    pub id: Uuid,
    pub request_id: Uuid,
    pub at: OffsetDateTime,
    pub event: String,
    pub by_label: String,
    pub document_id: Option<Uuid>,
    pub reason_enc: Option<Vec<u8>>,
}

/// The timelines of `requests`, oldest entry first.
pub async fn events(
    conn: &mut PgConnection,
    requests: &[Uuid],
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as!(
        EventRow,
        "select id, request_id, at, event, by_label, document_id, reason_enc
           from document_request_events where request_id = any($1) order by id",
        requests
    )
    .fetch_all(conn)
    .await
}

pub async fn doc_type_in_loan(
    conn: &mut PgConnection,
    request: Uuid,
    loan: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "select doc_type from document_requests where id = $1 and loan_id = $2",
        request,
        loan
    )
    .fetch_optional(conn)
    .await
}

pub async fn mark_reminded(
    conn: &mut PgConnection,
    requests: &[Uuid],
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update document_requests set reminders_sent = reminders_sent + 1, last_reminded_at = $2
          where id = any($1)",
        requests,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Disposal (docs/operations/retention.md): the needs list of the file `lead` keeps its
/// types, states and dates; the agents' notes and the reasons go.
pub async fn blank_for_disposal(tx: &mut PgConnection, leads: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update document_requests set note_enc = '\\x', reason_enc = null where lead_id = any($1)",
        leads
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update document_request_events set reason_enc = null
          where request_id in (select id from document_requests where lead_id = any($1))",
        leads
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
