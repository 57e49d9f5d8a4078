//! The needs list (docs/api.md "Doc request"): agents ask the borrower for document types,
//! review what arrives, and the borrower may answer "not applicable". Each request keeps a
//! timeline. States: `outstanding` → `received` (a file for it became available) →
//! `accepted` | `rejected` (the borrower sees the reason and uploads a replacement, which
//! makes it `received` again); `outstanding` | `rejected` → `not_applicable` (borrower).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use time::{Date, OffsetDateTime};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::check_text;
use super::ops::{decrypt_request, insert_request};
use super::store::{RequestRow, loan_requests};
use crate::auth::Actor;
use crate::crypto::field::{self, Location};
use crate::domain::DocType;
use crate::error::{AppError, AppJson, FieldError};
use crate::http::edge::RequestId;
use crate::http::support::{kms_unavailable, rfc3339, with_location};
use crate::loans::ops::{visible_loan, writable_loan};
use crate::state::AppState;

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let creating = crate::http::idempotency::layer(
        state,
        OpenApiRouter::new().routes(routes!(create_request, list_requests)),
    );
    OpenApiRouter::new().merge(creating)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    doc_type: DocType,
    /// What exactly is needed, for the borrower (at most 1000 characters).
    #[serde(default)]
    note: String,
    /// `YYYY-MM-DD`.
    due_date: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TimelineItem {
    at: String,
    event: String,
    by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    document_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentRequest {
    id: Uuid,
    loan_id: Uuid,
    doc_type: String,
    /// Absent for callers who see masked PII only.
    note: Option<String>,
    due_date: Option<String>,
    state: String,
    /// The agent's rejection reason, or the borrower's not-applicable comment.
    reason: Option<String>,
    timeline: Vec<TimelineItem>,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentRequestList {
    items: Vec<DocumentRequest>,
    next_cursor: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct EventRow {
    id: Uuid,
    request_id: Uuid,
    at: OffsetDateTime,
    event: String,
    by_label: String,
    document_id: Option<Uuid>,
    reason_enc: Option<Vec<u8>>,
}

fn at<'a>(table: &'a str, column: &'a str, row: Uuid) -> Location<'a> {
    Location { table, column, row }
}

async fn render_all(
    state: &AppState,
    conn: &mut PgConnection,
    rows: &[RequestRow],
    actor: &Actor,
) -> Result<Vec<DocumentRequest>, AppError> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    // language=PostgreSQL
    let (owner, team): (String, Option<String>) =
        sqlx::query_as("select owner_subject, team from loans where id = $1")
            .bind(first.loan_id)
            .fetch_one(&mut *conn)
            .await?;
    let masked = actor.masks(&owner, team.as_deref());
    let key = state
        .keys
        .file_key(&state.db, first.lead_id)
        .await
        .map_err(kms_unavailable)?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    // language=PostgreSQL
    let events: Vec<EventRow> = sqlx::query_as(
        "select id, request_id, at, event, by_label, document_id, reason_enc
           from document_request_events where request_id = any($1) order by id",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
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
            state: row.state.clone(),
            reason: plain.and_then(|p| p.reason),
            timeline,
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
        });
    }
    Ok(out)
}

fn parse_due_date(raw: Option<&str>, errors: &mut Vec<FieldError>) -> Option<Date> {
    let raw = raw?;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    match Date::parse(raw, &format) {
        Ok(d) if d >= OffsetDateTime::now_utc().date() => Some(d),
        Ok(_) => {
            errors.push(FieldError {
                field: "due_date".into(),
                message: "must not be in the past".into(),
            });
            None
        }
        Err(_) => {
            errors.push(FieldError {
                field: "due_date".into(),
                message: "must be a date as YYYY-MM-DD".into(),
            });
            None
        }
    }
}

/// Ask the borrower for a document type.
#[utoipa::path(post, path = "/v1/loans/{id}/document-requests", tag = "documents",
    params(("id" = Uuid, Path)), request_body = NewRequest,
    responses(
        (status = 201, description = "Requested", body = DocumentRequest),
        (status = 422, description = "Invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn create_request(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(loan_id): Path<Uuid>,
    AppJson(input): AppJson<NewRequest>,
) -> Result<Response, AppError> {
    let mut errors = Vec::new();
    check_text("note", &input.note, false, &mut errors);
    let due_date = parse_due_date(input.due_date.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(AppError::validation(errors));
    }
    let mut tx = state.db.begin().await?;
    let lead_id = writable_loan(&mut tx, loan_id, &actor).await?;
    let id = insert_request(
        &state,
        &mut tx,
        &actor,
        (loan_id, lead_id),
        input.doc_type,
        input.note.trim(),
        due_date,
        &request_id.0,
    )
    .await?;
    let rows: Vec<RequestRow> = loan_requests(&mut tx, loan_id)
        .await?
        .into_iter()
        .filter(|r| r.id == id)
        .collect();
    let rendered = render_all(&state, &mut tx, &rows, &actor).await?;
    tx.commit().await?;
    let request = rendered
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the request just written is missing"))?;
    Ok(with_location(
        StatusCode::CREATED,
        request,
        &format!("/v1/loans/{loan_id}/document-requests"),
    ))
}

/// The loan's needs list with states and timelines.
#[utoipa::path(get, path = "/v1/loans/{id}/document-requests", tag = "documents",
    params(("id" = Uuid, Path), crate::http::support::PageParams),
    responses((status = 200, description = "The needs list, oldest first", body = DocumentRequestList)))]
async fn list_requests(
    State(state): State<AppState>,
    actor: Actor,
    Path(loan_id): Path<Uuid>,
    query: Result<
        axum::extract::Query<crate::http::support::PageParams>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<AppJson<DocumentRequestList>, AppError> {
    let page = crate::http::support::PageParams::from_query(query)?.page::<Uuid>()?;
    let mut conn = state.db.acquire().await?;
    visible_loan(&mut conn, loan_id, &actor).await?;
    // A loan's needs list is short (one request per document asked for): paged in memory.
    let mut rows: Vec<_> = loan_requests(&mut conn, loan_id)
        .await?
        .into_iter()
        .filter(|r| page.after.is_none_or(|after| r.id > after))
        .take(page.limit as usize + 1)
        .collect();
    let next_cursor = crate::http::support::next_page(&mut rows, page.limit, |r| r.id.to_string());
    let items = render_all(&state, &mut conn, &rows, &actor).await?;
    Ok(AppJson(DocumentRequestList { items, next_cursor }))
}
