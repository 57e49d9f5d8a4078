//! Loan applications (docs/api.md): create for a visible lead, read, the dashboard (status
//! counts and a page of loans from one snapshot), status transitions with `If-Match`, and
//! the status history.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{Actor, ReadScope, Role};
use crate::crypto::DataKey;
use crate::crypto::field::{self, Location};
use crate::db::{audit, outbox};
use crate::domain::lead::{Address, validate_address};
use crate::domain::loan::{LoanStatus, LoanType, Mover, may_move};
use crate::domain::money::{Money, MoneyInput};
use crate::error::{AppError, AppJson, FieldError};
use crate::http::edge::RequestId;
use crate::http::support::{
    etag, if_match, kms_unavailable, malformed, next_page, push_scope, rfc3339,
};

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let creating =
        crate::http::idempotency::layer(state, OpenApiRouter::new().routes(routes!(create_loan)));
    OpenApiRouter::new()
        .routes(routes!(dashboard))
        .routes(routes!(get_loan))
        .routes(routes!(transition))
        .routes(routes!(history))
        .merge(creating)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLoan {
    lead_id: Uuid,
    loan_type: LoanType,
    /// Decimal string (or number), two places at most.
    #[schema(value_type = String)]
    amount: MoneyInput,
    property: Address,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NeedsAttention {
    reason: String,
    since: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Loan {
    id: Uuid,
    lead_id: Uuid,
    loan_type: String,
    /// Decimal string with two places.
    amount: String,
    property: Address,
    status: LoanStatus,
    version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    needs_attention: Option<NeedsAttention>,
    #[serde(skip_serializing_if = "Option::is_none")]
    los_loan_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    los_milestone: Option<String>,
    owner: String,
    team: Option<String>,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LoanRow {
    pub(crate) id: Uuid,
    lead_id: Uuid,
    owner_subject: String,
    team: Option<String>,
    loan_type: String,
    amount: Decimal,
    property_enc: Vec<u8>,
    status: LoanStatus,
    version: i64,
    los_loan_id: Option<String>,
    los_milestone: Option<String>,
    needs_attention_reason: Option<String>,
    needs_attention_since: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

const SELECT_LOAN: &str = "select o.id, o.lead_id, o.owner_subject, o.team, o.loan_type, o.amount,
        o.property_enc, o.status, o.version, o.los_loan_id, o.los_milestone,
        o.needs_attention_reason, o.needs_attention_since, o.created_at, o.updated_at
   from loans o";

fn property_at(id: Uuid) -> Location<'static> {
    Location {
        table: "loans",
        column: "property_enc",
        row: id,
    }
}

fn render(row: &LoanRow, key: &DataKey, actor: &Actor) -> Result<Loan, AppError> {
    let plain = field::decrypt(key, property_at(row.id), &row.property_enc)
        .map_err(|e| anyhow::anyhow!("decrypting loans.property_enc: {e}"))?;
    let mut property: Address =
        serde_json::from_slice(&plain).map_err(|e| anyhow::anyhow!("loans.property_enc: {e}"))?;
    if actor.masks(&row.owner_subject, row.team.as_deref()) {
        property.line1 = "***".into();
        property.line2 = None;
    }
    Ok(Loan {
        id: row.id,
        lead_id: row.lead_id,
        loan_type: row.loan_type.clone(),
        amount: row.amount.to_string(),
        property,
        status: row.status,
        version: row.version,
        needs_attention: row
            .needs_attention_reason
            .clone()
            .map(|reason| NeedsAttention {
                reason,
                since: row.needs_attention_since.map(rfc3339).unwrap_or_default(),
            }),
        los_loan_id: row.los_loan_id.clone(),
        los_milestone: row.los_milestone.clone(),
        owner: row.owner_subject.clone(),
        team: row.team.clone(),
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
    })
}

async fn fetch_loan(
    conn: &mut PgConnection,
    id: Uuid,
    scope: &ReadScope,
    for_update: bool,
) -> Result<Option<LoanRow>, sqlx::Error> {
    let mut query = QueryBuilder::<Postgres>::new(SELECT_LOAN);
    query.push(" where o.id = ").push_bind(id);
    push_scope(&mut query, "o", scope);
    if for_update {
        query.push(" for update");
    }
    query.build_query_as::<LoanRow>().fetch_optional(conn).await
}

fn with_etag(status: StatusCode, loan: Loan) -> Response {
    let version = loan.version;
    let id = loan.id;
    let mut response = (status, AppJson(loan)).into_response();
    response.headers_mut().insert(header::ETAG, etag(version));
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&format!("/v1/loans/{id}"))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Create a loan application (status `draft`) for a lead the caller may change.
#[utoipa::path(post, path = "/v1/loans", tag = "loans", request_body = NewLoan,
    params(("Idempotency-Key" = String, Header, description = "Required")),
    responses(
        (status = 201, description = "Created", body = Loan),
        (status = 422, description = "Invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn create_loan(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(request_id): Extension<RequestId>,
    AppJson(input): AppJson<NewLoan>,
) -> Result<Response, AppError> {
    let write_scope = actor.write_scope()?;
    let mut errors = Vec::new();
    let amount = match Money::parse(&input.amount.0) {
        Ok(m) if m.value() > Decimal::ZERO => Some(m),
        Ok(_) => {
            errors.push(FieldError {
                field: "amount".into(),
                message: "must be more than zero".into(),
            });
            None
        }
        Err(message) => {
            errors.push(FieldError {
                field: "amount".into(),
                message: message.into(),
            });
            None
        }
    };
    let property = validate_address(&mut errors, "property", input.property);
    if !errors.is_empty() {
        return Err(AppError::validation(errors));
    }
    let amount = amount.ok_or_else(|| anyhow::anyhow!("validated amount missing"))?;
    let (loan, key) = create(
        &state,
        &actor,
        &write_scope,
        input.lead_id,
        input.loan_type,
        amount,
        &property,
        &request_id.0,
    )
    .await?;
    Ok(with_etag(StatusCode::CREATED, render(&loan, &key, &actor)?))
}

/// Create a validated loan for a lead within `write_scope`; the row and its audit entry in
/// one transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn create(
    state: &AppState,
    actor: &Actor,
    write_scope: &ReadScope,
    lead_id: Uuid,
    loan_type: LoanType,
    amount: Money,
    property: &Address,
    request_id: &str,
) -> Result<(LoanRow, std::sync::Arc<DataKey>), AppError> {
    let mut tx = state.db.begin().await?;
    // The lead must be one the caller may change; an invisible lead is a field error.
    let mut query =
        QueryBuilder::<Postgres>::new("select l.owner_subject, l.team from leads l where l.id = ");
    query.push_bind(lead_id);
    push_scope(&mut query, "l", write_scope);
    query.push(" for share");
    let lead: Option<(String, Option<String>)> =
        query.build_query_as().fetch_optional(&mut *tx).await?;
    let Some((owner, team)) = lead else {
        return Err(AppError::validation(vec![FieldError {
            field: "lead_id".into(),
            message: "no such lead".into(),
        }]));
    };
    let id = Uuid::now_v7();
    let key = state
        .keys
        .file_key(&state.db, lead_id)
        .await
        .map_err(kms_unavailable)?;
    let property_enc = field::encrypt(
        &key,
        1,
        property_at(id),
        &serde_json::to_vec(property).unwrap_or_default(),
    );
    // language=PostgreSQL
    sqlx::query(
        "insert into loans (id, lead_id, owner_subject, team, loan_type, amount, property_enc)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(lead_id)
    .bind(&owner)
    .bind(&team)
    .bind(loan_type.as_str())
    .bind(amount.value())
    .bind(&property_enc)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: lead_id,
            actor,
            action: "loan.created",
            entity_type: "loan",
            entity_id: id,
            request_id: Some(request_id),
            details: json!({ "lead_id": lead_id, "status": "draft" }),
        },
    )
    .await?;
    let row = fetch_loan(&mut tx, id, &ReadScope::All, false)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the loan just written is missing"))?;
    tx.commit().await?;
    Ok((row, key))
}

/// One loan.
#[utoipa::path(get, path = "/v1/loans/{id}", tag = "loans", params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The loan", body = Loan),
        (status = 404, description = "No such loan (or not yours)", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn get_loan(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let mut conn = state.db.acquire().await?;
    let row = fetch_loan(&mut conn, id, &actor.read_scope(), false)
        .await?
        .ok_or_else(AppError::not_found)?;
    drop(conn);
    let key = state
        .keys
        .file_key(&state.db, row.lead_id)
        .await
        .map_err(kms_unavailable)?;
    Ok(with_etag(StatusCode::OK, render(&row, &key, &actor)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DashboardParams {
    status: Option<LoanStatus>,
    /// 1–200, default 50.
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoanList {
    items: Vec<Loan>,
    next_cursor: Option<String>,
    /// Every status with its count, from the same snapshot as `items`.
    status_counts: BTreeMap<String, i64>,
}

/// The dashboard: status counts and a page of loans, read in one snapshot.
#[utoipa::path(get, path = "/v1/loans", tag = "loans", params(DashboardParams),
    responses((status = 200, description = "Counts and a page of loans", body = LoanList)))]
async fn dashboard(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    query: Result<Query<DashboardParams>, axum::extract::rejection::QueryRejection>,
) -> Result<AppJson<LoanList>, AppError> {
    let Query(params) = query.map_err(|_| malformed("a query parameter is not valid"))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(malformed("`limit` must be between 1 and 200"));
    }
    let cursor = params
        .cursor
        .as_deref()
        .map(Uuid::parse_str)
        .transpose()
        .map_err(|_| malformed("`cursor` is not valid"))?;
    let scope = actor.read_scope();
    let mut tx = state.db.begin().await?;
    // Counts and page from one snapshot: strongly consistent, as the brief asks.
    // language=PostgreSQL
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    let mut counts_query =
        QueryBuilder::<Postgres>::new("select o.status, count(*) from loans o where true");
    push_scope(&mut counts_query, "o", &scope);
    counts_query.push(" group by o.status");
    let counts: Vec<(String, i64)> = counts_query.build_query_as().fetch_all(&mut *tx).await?;
    let mut page_query = QueryBuilder::<Postgres>::new(SELECT_LOAN);
    page_query.push(" where true");
    push_scope(&mut page_query, "o", &scope);
    if let Some(status) = params.status {
        page_query
            .push(" and o.status = ")
            .push_bind(status.as_str());
    }
    if let Some(cursor) = cursor {
        page_query.push(" and o.id < ").push_bind(cursor);
    }
    page_query
        .push(" order by o.id desc limit ")
        .push_bind(limit + 1);
    let mut rows: Vec<LoanRow> = page_query.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;

    let mut status_counts: BTreeMap<String, i64> = LoanStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for (status, count) in counts {
        status_counts.insert(status, count);
    }
    let next_cursor = next_page(&mut rows, limit, |r| r.id.to_string());
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let key = state
            .keys
            .file_key(&state.db, row.lead_id)
            .await
            .map_err(kms_unavailable)?;
        items.push(render(row, &key, &actor)?);
    }
    Ok(AppJson(LoanList {
        items,
        next_cursor,
        status_counts,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    status: LoanStatus,
    reason: Option<String>,
}

/// Move a loan through its status machine; `If-Match` required. 409 for a move the
/// machine never allows, then 403 for a move the caller's role may not make.
#[utoipa::path(post, path = "/v1/loans/{id}/status", tag = "loans",
    params(("id" = Uuid, Path), ("If-Match" = String, Header, description = "The ETag you last read (428 without it, 412 when the loan changed since)")),
    request_body = TransitionRequest,
    responses(
        (status = 200, description = "Moved", body = Loan),
        (status = 409, description = "The machine does not allow it", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 412, description = "Stale If-Match", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn transition(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    AppJson(request): AppJson<TransitionRequest>,
) -> Result<Response, AppError> {
    if let Some(reason) = &request.reason
        && reason.chars().count() > 1000
    {
        return Err(AppError::validation(vec![FieldError {
            field: "reason".into(),
            message: "must be at most 1000 characters".into(),
        }]));
    }
    let mut tx = state.db.begin().await?;
    let row = fetch_loan(&mut tx, id, &actor.read_scope(), true)
        .await?
        .ok_or_else(AppError::not_found)?;
    let from = row.status;
    let to = request.status;
    if !from.can_move_to(to) {
        return Err(AppError::client(
            StatusCode::CONFLICT,
            "invalid_transition",
            format!(
                "a loan cannot move from {} to {}",
                from.as_str(),
                to.as_str()
            ),
        ));
    }
    let owns = row.owner_subject == actor.subject;
    let in_team = actor.team.is_some() && row.team == actor.team;
    let mover = if actor.has(Role::Manager) && in_team {
        Some(Mover::Manager)
    } else if actor.has(Role::Agent) && owns {
        Some(Mover::Agent)
    } else {
        None
    };
    if !mover.is_some_and(|m| may_move(m, from, to)) {
        return Err(AppError::forbidden());
    }
    let expected = if_match(&headers)?;
    if expected != row.version {
        return Err(AppError::client(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "the loan changed since you read it; read it again",
        ));
    }
    let key = state
        .keys
        .file_key(&state.db, row.lead_id)
        .await
        .map_err(kms_unavailable)?;
    let moving = Moving {
        id: row.id,
        lead_id: row.lead_id,
        status: row.status,
    };
    apply_transition(
        &mut tx,
        &key,
        &moving,
        to,
        &actor,
        request.reason.as_deref(),
        &request_id.0,
    )
    .await?;
    let row = fetch_loan(&mut tx, id, &ReadScope::All, false)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the loan just moved is missing"))?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::OK, render(&row, &key, &actor)?))
}

/// The transition's writes, in the caller's transaction: the loan, its history row, the
/// audit row and the `loan.status.changed` event — all or nothing.
/// The loan a transition applies to.
pub struct Moving {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub status: LoanStatus,
}

pub async fn apply_transition(
    tx: &mut PgConnection,
    key: &DataKey,
    row: &Moving,
    to: LoanStatus,
    actor: &Actor,
    reason: Option<&str>,
    request_id: &str,
) -> Result<(), AppError> {
    // language=PostgreSQL
    sqlx::query(
        "update loans set status = $2, version = version + 1, updated_at = now() where id = $1",
    )
    .bind(row.id)
    .bind(to.as_str())
    .execute(&mut *tx)
    .await?;
    let reason_enc = reason.map(|r| {
        field::encrypt(
            key,
            1,
            Location {
                table: "loan_status_history",
                column: "reason_enc",
                row: row.id,
            },
            r.as_bytes(),
        )
    });
    // language=PostgreSQL
    sqlx::query(
        "insert into loan_status_history (loan_id, from_status, to_status, actor_subject, reason_enc)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(row.id)
    .bind(row.status.as_str())
    .bind(to.as_str())
    .bind(&actor.subject)
    .bind(&reason_enc)
    .execute(&mut *tx)
    .await?;
    audit::record(
        tx,
        audit::Entry {
            chain: row.lead_id,
            actor,
            action: "loan.status_changed",
            entity_type: "loan",
            entity_id: row.id,
            request_id: Some(request_id),
            details: json!({ "from": row.status.as_str(), "to": to.as_str(), "reason_given": reason.is_some() }),
        },
    )
    .await?;
    outbox::enqueue(
        tx,
        "loan.status.changed",
        json!({ "loanId": row.id, "oldStatus": row.status.as_str(), "newStatus": to.as_str() }),
        Some(request_id),
    )
    .await?;
    Ok(())
}

/// from, to, actor, encrypted reason, at.
type HistoryRow = (i64, String, String, String, Option<Vec<u8>>, OffsetDateTime);

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryList {
    items: Vec<HistoryItem>,
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryItem {
    from: String,
    to: String,
    actor: String,
    reason: Option<String>,
    at: String,
}

/// The loan's status history, oldest first.
#[utoipa::path(get, path = "/v1/loans/{id}/history", tag = "loans",
    params(("id" = Uuid, Path), crate::http::support::PageParams),
    responses((status = 200, description = "Transitions", body = HistoryList)))]
async fn history(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<Uuid>,
    query: Result<
        axum::extract::Query<crate::http::support::PageParams>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<AppJson<HistoryList>, AppError> {
    let page = crate::http::support::PageParams::from_query(query)?.page::<i64>()?;
    let mut conn = state.db.acquire().await?;
    let row = fetch_loan(&mut conn, id, &actor.read_scope(), false)
        .await?
        .ok_or_else(AppError::not_found)?;
    // language=PostgreSQL
    let mut rows: Vec<HistoryRow> = sqlx::query_as(
        "select id, from_status, to_status, actor_subject, reason_enc, at
           from loan_status_history where loan_id = $1 and ($2::bigint is null or id > $2)
          order by id limit $3",
    )
    .bind(id)
    .bind(page.after)
    .bind(page.limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let next_cursor = crate::http::support::next_page(&mut rows, page.limit, |r| r.0.to_string());
    drop(conn);
    let key = state
        .keys
        .file_key(&state.db, row.lead_id)
        .await
        .map_err(kms_unavailable)?;
    let mut items = Vec::with_capacity(rows.len());
    let masked = actor.masks(&row.owner_subject, row.team.as_deref());
    for (_, from, to, actor_subject, reason_enc, at) in rows {
        let reason = match reason_enc {
            Some(enc) => Some(
                String::from_utf8(
                    field::decrypt(
                        &key,
                        Location {
                            table: "loan_status_history",
                            column: "reason_enc",
                            row: id,
                        },
                        &enc,
                    )
                    .map_err(|e| anyhow::anyhow!("decrypting a transition reason: {e}"))?,
                )
                .unwrap_or_default(),
            ),
            None => None,
        };
        items.push(HistoryItem {
            from,
            to,
            actor: actor_subject,
            // Reasons are free text about the borrower: not for masked-only callers.
            reason: if masked {
                reason.map(|_| crate::domain::mask::HIDDEN.to_owned())
            } else {
                reason
            },
            at: rfc3339(at),
        });
    }
    Ok(AppJson(HistoryList { items, next_cursor }))
}
