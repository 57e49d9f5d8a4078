//! Leads (docs/api.md): create, read (SSN masked unless `?reveal=ssn`, audited), list,
//! JSON merge patch with `If-Match`. Every borrower field except the names is encrypted per
//! field under the lead's own data key; reads are scoped in SQL by the caller's role.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::middleware::SideEffects;
use crate::auth::{Actor, ReadScope};
use crate::crypto::field::{self, Location};
use crate::crypto::{DataKey, blind_index};
use crate::db::{audit, outbox};
use crate::domain::lead::{Address, LeadInput, LeadStatus, LoanPurpose, ValidLead, merge_patch};
use crate::domain::mask;
use crate::domain::ssn::Ssn;
use crate::error::{AppError, AppJson};
use crate::http::edge::RequestId;
use crate::http::support::{
    etag, if_match, kms_unavailable, malformed, next_page, push_scope, rfc3339,
};

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let creating =
        crate::http::idempotency::layer(state, OpenApiRouter::new().routes(routes!(create_lead)));
    OpenApiRouter::new()
        .routes(routes!(list_leads))
        .routes(routes!(get_lead, patch_lead))
        .merge(creating)
}

const TABLE: &str = "leads";

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Owner {
    pub subject: String,
    pub display_name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Lead {
    pub id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// `***-**-1234` unless revealed.
    pub ssn: Option<String>,
    pub date_of_birth: Option<String>,
    pub address: Option<Address>,
    pub annual_income: Option<String>,
    pub loan_purpose: Option<LoanPurpose>,
    pub source: Option<String>,
    pub notes: Option<String>,
    pub status: LeadStatus,
    pub owner: Owner,
    pub team: Option<String>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub possible_duplicates: Option<Vec<Uuid>>,
}

#[derive(Debug, sqlx::FromRow)]
struct LeadRow {
    id: Uuid,
    owner_subject: String,
    owner_name: Option<String>,
    team: Option<String>,
    first_name: String,
    last_name: String,
    email_enc: Option<Vec<u8>>,
    phone_enc: Option<Vec<u8>>,
    ssn_enc: Option<Vec<u8>>,
    date_of_birth_enc: Option<Vec<u8>>,
    annual_income_enc: Option<Vec<u8>>,
    address_enc: Option<Vec<u8>>,
    notes_enc: Option<Vec<u8>>,
    loan_purpose: Option<String>,
    source: Option<String>,
    status: LeadStatus,
    version: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

const SELECT_LEAD: &str = "select l.id, l.owner_subject, a.display_name as owner_name, l.team,
        l.first_name, l.last_name, l.email_enc, l.phone_enc, l.ssn_enc, l.date_of_birth_enc,
        l.annual_income_enc, l.address_enc, l.notes_enc, l.loan_purpose, l.source, l.status,
        l.version, l.created_at, l.updated_at
   from leads l left join agents a on a.subject = l.owner_subject";

fn at(row: Uuid, column: &'static str) -> Location<'static> {
    Location {
        table: TABLE,
        column,
        row,
    }
}

fn seal(key: &DataKey, row: Uuid, column: &'static str, value: Option<String>) -> Option<Vec<u8>> {
    value.map(|v| field::encrypt(key, 1, at(row, column), v.as_bytes()))
}

fn unseal(
    key: &DataKey,
    row: Uuid,
    column: &'static str,
    value: &Option<Vec<u8>>,
) -> Result<Option<String>, AppError> {
    match value {
        None => Ok(None),
        Some(envelope) => {
            let plain = field::decrypt(key, at(row, column), envelope)
                .map_err(|e| anyhow::anyhow!("decrypting {TABLE}.{column}: {e}"))?;
            Ok(Some(String::from_utf8(plain).map_err(|_| {
                anyhow::anyhow!("{TABLE}.{column} is not UTF-8")
            })?))
        }
    }
}

/// Decrypt a row into the API shape. `reveal_ssn` shows the full SSN (audited by the caller).
fn render(row: &LeadRow, key: &DataKey, actor: &Actor, reveal_ssn: bool) -> Result<Lead, AppError> {
    let id = row.id;
    let masked = actor.masks(&row.owner_subject, row.team.as_deref());
    let ssn = unseal(key, id, "ssn_enc", &row.ssn_enc)?
        .and_then(|s| Ssn::parse(&s).ok())
        .map(|s| {
            if reveal_ssn {
                s.formatted()
            } else {
                s.masked()
            }
        });
    let email = unseal(key, id, "email_enc", &row.email_enc)?;
    let phone = unseal(key, id, "phone_enc", &row.phone_enc)?;
    let dob = unseal(key, id, "date_of_birth_enc", &row.date_of_birth_enc)?;
    let income = unseal(key, id, "annual_income_enc", &row.annual_income_enc)?;
    let address: Option<Address> = unseal(key, id, "address_enc", &row.address_enc)?
        .and_then(|a| serde_json::from_str(&a).ok());
    let notes = unseal(key, id, "notes_enc", &row.notes_enc)?;
    let loan_purpose = row
        .loan_purpose
        .as_deref()
        .and_then(|p| serde_json::from_value(Value::String(p.to_owned())).ok());
    Ok(Lead {
        id,
        first_name: row.first_name.clone(),
        last_name: row.last_name.clone(),
        email: if masked {
            email.as_deref().map(mask::email)
        } else {
            email
        },
        phone: if masked {
            phone.as_deref().map(|p| mask::tail(p, 4))
        } else {
            phone
        },
        ssn,
        date_of_birth: if masked {
            dob.map(|_| "****-**-**".into())
        } else {
            dob
        },
        address: if masked {
            address.map(|a| Address {
                line1: "***".into(),
                line2: None,
                ..a
            })
        } else {
            address
        },
        annual_income: if masked {
            income.map(|_| "***".into())
        } else {
            income
        },
        loan_purpose,
        source: row.source.clone(),
        notes: if masked {
            notes.map(|_| "***".into())
        } else {
            notes
        },
        status: row.status,
        owner: Owner {
            subject: row.owner_subject.clone(),
            display_name: row
                .owner_name
                .clone()
                .unwrap_or_else(|| row.owner_subject.clone()),
        },
        team: row.team.clone(),
        version: row.version,
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
        possible_duplicates: None,
    })
}

async fn fetch_lead(
    db: &mut PgConnection,
    id: Uuid,
    scope: &ReadScope,
    for_update: bool,
) -> Result<Option<LeadRow>, sqlx::Error> {
    let mut query = QueryBuilder::<Postgres>::new(SELECT_LEAD);
    query.push(" where l.id = ").push_bind(id);
    push_scope(&mut query, "l", scope);
    if for_update {
        query.push(" for update of l");
    }
    query.build_query_as::<LeadRow>().fetch_optional(db).await
}

struct SealedLead {
    email: Option<Vec<u8>>,
    phone: Option<Vec<u8>>,
    ssn: Option<Vec<u8>>,
    ssn_index: Option<i32>,
    dob: Option<Vec<u8>>,
    income: Option<Vec<u8>>,
    address: Option<Vec<u8>>,
    notes: Option<Vec<u8>>,
}

fn seal_lead(lead: &ValidLead, id: Uuid, key: &DataKey, index_key: &DataKey) -> SealedLead {
    SealedLead {
        email: seal(key, id, "email_enc", lead.email.clone()),
        phone: seal(key, id, "phone_enc", lead.phone.clone()),
        ssn: seal(
            key,
            id,
            "ssn_enc",
            lead.ssn.as_ref().map(|s| s.digits().to_owned()),
        ),
        ssn_index: lead
            .ssn
            .as_ref()
            .map(|s| blind_index::ssn_index(index_key, s.digits())),
        dob: seal(
            key,
            id,
            "date_of_birth_enc",
            lead.date_of_birth.map(|d| d.to_string()),
        ),
        income: seal(
            key,
            id,
            "annual_income_enc",
            lead.annual_income.map(|m| m.to_string()),
        ),
        address: seal(
            key,
            id,
            "address_enc",
            lead.address
                .as_ref()
                .map(|a| serde_json::to_string(a).unwrap_or_default()),
        ),
        notes: seal(key, id, "notes_enc", lead.notes.clone()),
    }
}

/// Bind a lead's stored fields as the next 13 parameters, in the order the insert and the
/// update both list them (first_name … status).
fn bind_fields<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    lead: &'q ValidLead,
    sealed: &'q SealedLead,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(&lead.first_name)
        .bind(&lead.last_name)
        .bind(&sealed.email)
        .bind(&sealed.phone)
        .bind(&sealed.ssn)
        .bind(sealed.ssn_index)
        .bind(&sealed.dob)
        .bind(&sealed.income)
        .bind(&sealed.address)
        .bind(&sealed.notes)
        .bind(lead.loan_purpose.map(LoanPurpose::as_str))
        .bind(&lead.source)
        .bind(lead.status.as_str())
}

/// Which fields a lead carries (audit details: names, never values).
fn present_fields(lead: &ValidLead) -> Vec<&'static str> {
    let mut fields = vec!["first_name", "last_name"];
    for (name, present) in [
        ("email", lead.email.is_some()),
        ("phone", lead.phone.is_some()),
        ("ssn", lead.ssn.is_some()),
        ("date_of_birth", lead.date_of_birth.is_some()),
        ("address", lead.address.is_some()),
        ("annual_income", lead.annual_income.is_some()),
        ("loan_purpose", lead.loan_purpose.is_some()),
        ("source", lead.source.is_some()),
        ("notes", lead.notes.is_some()),
    ] {
        if present {
            fields.push(name);
        }
    }
    fields
}

fn today() -> time::Date {
    OffsetDateTime::now_utc().date()
}

/// Leads the caller can see with the same SSN: the blind index narrows, decryption decides.
async fn possible_duplicates(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    ssn: &Ssn,
    index: i32,
) -> Result<Vec<Uuid>, AppError> {
    let mut query =
        QueryBuilder::<Postgres>::new("select l.id, l.ssn_enc from leads l where l.ssn_index = ");
    query.push_bind(index).push(" and l.id <> ").push_bind(id);
    push_scope(&mut query, "l", &actor.read_scope());
    query.push(" limit 200");
    let candidates: Vec<(Uuid, Option<Vec<u8>>)> =
        query.build_query_as().fetch_all(&state.db).await?;
    let mut duplicates = Vec::new();
    for (candidate, envelope) in candidates {
        let key = state
            .keys
            .file_key(&state.db, candidate)
            .await
            .map_err(kms_unavailable)?;
        if unseal(&key, candidate, "ssn_enc", &envelope)?.as_deref() == Some(ssn.digits()) {
            duplicates.push(candidate);
        }
    }
    Ok(duplicates)
}

fn created(lead: Lead) -> Response {
    let location = format!("/v1/leads/{}", lead.id);
    let mut response = (StatusCode::CREATED, AppJson(&lead)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    headers.insert(header::ETAG, etag(lead.version));
    response
}

/// Create a lead; PII is encrypted under the lead's own data key.
#[utoipa::path(post, path = "/v1/leads", tag = "leads", request_body = LeadInput,
    params(("Idempotency-Key" = String, Header, description = "Required; replays return the stored response")),
    responses(
        (status = 201, description = "Created", body = Lead),
        (status = 400, description = "No Idempotency-Key", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Role may not create leads", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn create_lead(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(request_id): Extension<RequestId>,
    AppJson(mut input): AppJson<LeadInput>,
) -> Result<Response, AppError> {
    actor.write_scope()?;
    let consent = input
        .credit_consent
        .take()
        .map(|c| c.validate(time::OffsetDateTime::now_utc()));
    let lead = input.validate(today());
    let (lead, credit) = match (lead, consent.transpose()) {
        (Ok(lead), Ok(credit)) => (lead, credit),
        (lead, credit) => {
            let mut errors = lead.err().unwrap_or_default();
            errors.extend(credit.err().unwrap_or_default());
            return Err(AppError::validation(errors));
        }
    };
    Ok(created(
        create_with_pull(&state, &actor, &lead, credit, &request_id.0).await?,
    ))
}

/// Create a lead for `actor`: the data key, the encrypted row, the audit row and the
/// `lead.created` event in one transaction; then the duplicate check.
pub async fn create(
    state: &AppState,
    actor: &Actor,
    lead: &ValidLead,
    request_id: &str,
) -> Result<Lead, AppError> {
    create_with_pull(state, actor, lead, None, request_id).await
}

/// As [`create`]; with a credit consent, the pull it permits is queued in the same
/// transaction (the saga's first step: no lead with a consent is left without its pull).
pub async fn create_with_pull(
    state: &AppState,
    actor: &Actor,
    lead: &ValidLead,
    credit: Option<(
        crate::domain::credit::PullType,
        crate::domain::credit::Consent,
    )>,
    request_id: &str,
) -> Result<Lead, AppError> {
    actor.write_scope()?;
    let id = Uuid::now_v7();
    let index_key = state
        .keys
        .ssn_index_key(&state.db)
        .await
        .map_err(kms_unavailable)?;
    let mut tx = state.db.begin().await?;
    let key = state
        .keys
        .create_file_key(&mut tx, id)
        .await
        .map_err(kms_unavailable)?;
    let sealed = seal_lead(lead, id, &key, &index_key);
    // language=PostgreSQL
    let insert = sqlx::query(
        "insert into leads (id, first_name, last_name, email_enc, phone_enc, ssn_enc, ssn_index,
                            date_of_birth_enc, annual_income_enc, address_enc, notes_enc,
                            loan_purpose, source, status, owner_subject, team)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(id);
    bind_fields(insert, lead, &sealed)
        .bind(&actor.subject)
        .bind(&actor.team)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: id,
            actor,
            action: "lead.created",
            entity_type: "lead",
            entity_id: id,
            request_id: Some(request_id),
            details: json!({ "fields": present_fields(lead) }),
        },
    )
    .await?;
    outbox::enqueue(
        &mut tx,
        "lead.created",
        json!({ "leadId": id }),
        Some(request_id),
    )
    .await?;
    if let Some((pull_type, consent)) = &credit {
        crate::http::credit::queue_pull(
            state,
            &mut tx,
            actor,
            id,
            *pull_type,
            consent,
            ("new", None),
            request_id,
        )
        .await?;
    }
    let row = fetch_lead(&mut tx, id, &ReadScope::All, false)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the lead just written is missing"))?;
    tx.commit().await?;

    let mut view = render(&row, &key, actor, false)?;
    if let (Some(ssn), Some(index)) = (&lead.ssn, sealed.ssn_index) {
        let duplicates = possible_duplicates(state, actor, id, ssn, index).await?;
        if !duplicates.is_empty() {
            view.possible_duplicates = Some(duplicates);
        }
    }
    Ok(view)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// `ssn` to return the full SSN (audited; needs a recent sign-in).
    #[param(inline)]
    reveal: Option<Reveal>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reveal {
    Ssn,
}

/// One lead; the SSN masked unless `?reveal=ssn`.
#[utoipa::path(get, path = "/v1/leads/{id}", tag = "leads", params(("id" = Uuid, Path), GetParams),
    responses(
        (status = 200, description = "The lead", body = Lead),
        (status = 404, description = "No such lead (or not yours)", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn get_lead(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(request_id): Extension<RequestId>,
    Extension(side_effects): Extension<SideEffects>,
    Path(id): Path<Uuid>,
    query: Result<Query<GetParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let Query(params) = query.map_err(|_| malformed("`reveal` accepts only `ssn`"))?;
    let reveal = matches!(params.reveal, Some(Reveal::Ssn));
    let mut conn = state.db.acquire().await?;
    let row = fetch_lead(&mut conn, id, &actor.read_scope(), false)
        .await?
        .ok_or_else(AppError::not_found)?;
    drop(conn);
    if reveal {
        if actor.masks(&row.owner_subject, row.team.as_deref()) {
            return Err(AppError::forbidden());
        }
        side_effects.require()?;
        actor.require_recent_auth(state.settings.auth.step_up_max_age_secs)?;
        let mut tx = state.db.begin().await?;
        audit::record(
            &mut tx,
            audit::Entry {
                chain: id,
                actor: &actor,
                action: "lead.ssn_revealed",
                entity_type: "lead",
                entity_id: id,
                request_id: Some(&request_id.0),
                details: json!({ "fields": ["ssn"] }),
            },
        )
        .await?;
        tx.commit().await?;
    }
    let key = state
        .keys
        .file_key(&state.db, id)
        .await
        .map_err(kms_unavailable)?;
    let view = render(&row, &key, &actor, reveal)?;
    let mut response = AppJson(&view).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, etag(view.version));
    Ok(response)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    status: Option<LeadStatus>,
    /// Case-insensitive match on first or last name.
    q: Option<String>,
    /// RFC 3339.
    created_after: Option<String>,
    /// 1–200, default 50.
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeadList {
    items: Vec<Lead>,
    next_cursor: Option<String>,
}

/// The leads the caller can see, newest first.
#[utoipa::path(get, path = "/v1/leads", tag = "leads", params(ListParams),
    responses((status = 200, description = "A page of leads", body = LeadList)))]
async fn list_leads(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<AppJson<LeadList>, AppError> {
    let Query(params) = query.map_err(|_| malformed("a query parameter is not valid"))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(malformed("`limit` must be between 1 and 200"));
    }
    let mut query = QueryBuilder::<Postgres>::new(SELECT_LEAD);
    query.push(" where true");
    push_scope(&mut query, "l", &actor.read_scope());
    if let Some(status) = params.status {
        query.push(" and l.status = ").push_bind(status.as_str());
    }
    if let Some(q) = params.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        let pattern = format!(
            "%{}%",
            q.to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        // One escaped pattern for all three: `%` and `_` typed by the caller are literal.
        query
            .push(" and (lower(l.first_name) like ")
            .push_bind(pattern.clone())
            .push(" or lower(l.last_name) like ")
            .push_bind(pattern.clone())
            .push(" or lower(l.first_name || ' ' || l.last_name) like ")
            .push_bind(pattern)
            .push(")");
    }
    if let Some(after) = &params.created_after {
        let after = OffsetDateTime::parse(after, &Rfc3339)
            .map_err(|_| malformed("`created_after` must be an RFC 3339 time"))?;
        query.push(" and l.created_at > ").push_bind(after);
    }
    if let Some(cursor) = &params.cursor {
        let cursor = Uuid::parse_str(cursor).map_err(|_| malformed("`cursor` is not valid"))?;
        query.push(" and l.id < ").push_bind(cursor);
    }
    query
        .push(" order by l.id desc limit ")
        .push_bind(limit + 1);
    let mut rows = query
        .build_query_as::<LeadRow>()
        .fetch_all(&state.db)
        .await?;
    let next_cursor = next_page(&mut rows, limit, |r| r.id.to_string());
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let key = state
            .keys
            .file_key(&state.db, row.id)
            .await
            .map_err(kms_unavailable)?;
        items.push(render(row, &key, &actor, false)?);
    }
    Ok(AppJson(LeadList { items, next_cursor }))
}

/// The full, unmasked JSON of a lead, as the merge patch's target.
fn as_input_json(view: &Lead, ssn: Option<String>) -> Value {
    let mut doc = json!({
        "first_name": view.first_name,
        "last_name": view.last_name,
        "email": view.email,
        "phone": view.phone,
        "ssn": ssn,
        "date_of_birth": view.date_of_birth,
        "address": view.address,
        "annual_income": view.annual_income,
        "loan_purpose": view.loan_purpose,
        "source": view.source,
        "notes": view.notes,
        "status": view.status,
    });
    if let Value::Object(fields) = &mut doc {
        fields.retain(|_, v| !v.is_null());
    }
    doc
}

/// Update a lead with a JSON merge patch (RFC 7396); `If-Match` required.
#[utoipa::path(patch, path = "/v1/leads/{id}", tag = "leads",
    params(("id" = Uuid, Path), ("If-Match" = String, Header, description = "The ETag you last read (428 without it, 412 when the lead changed since)")),
    request_body(content = Value, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "Updated", body = Lead),
        (status = 412, description = "Stale If-Match", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 428, description = "No If-Match", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn patch_lead(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(content_type.starts_with("application/merge-patch+json")
        || content_type.starts_with("application/json"))
    {
        return Err(AppError::client(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/merge-patch+json or application/json",
        ));
    }
    let patch: Value = serde_json::from_slice(&body).map_err(|_| {
        AppError::client(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "the request body is not valid JSON",
        )
    })?;
    if !patch.is_object() {
        return Err(AppError::validation(vec![crate::error::FieldError {
            field: String::new(),
            message: "a merge patch must be a JSON object".into(),
        }]));
    }
    let scope = actor.read_scope();
    let mut tx = state.db.begin().await?;
    let row = fetch_lead(&mut tx, id, &scope, true)
        .await?
        .ok_or_else(AppError::not_found)?;
    // Visible but not writable (compliance, admin) is 403; invisible was 404 above.
    let write_scope = actor.write_scope()?;
    let writable = match &write_scope {
        ReadScope::Own(subject) => &row.owner_subject == subject,
        ReadScope::Team(team) => row.team.as_ref() == Some(team),
        ReadScope::All => true,
    };
    if !writable {
        return Err(AppError::forbidden());
    }
    let expected = if_match(&headers)?;
    if expected != row.version {
        return Err(AppError::client(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "the lead changed since you read it; read it again",
        ));
    }
    let key = state
        .keys
        .file_key(&state.db, id)
        .await
        .map_err(kms_unavailable)?;
    let current_view = render(&row, &key, &actor, true)?;
    let current_ssn = unseal(&key, id, "ssn_enc", &row.ssn_enc)?;
    let before = as_input_json(&current_view, current_ssn);
    let mut merged = before.clone();
    merge_patch(&mut merged, &patch);
    let input: LeadInput = serde_json::from_value(merged.clone()).map_err(|e| {
        let message = e.to_string();
        let message = message.split(" at line").next().unwrap_or("").to_owned();
        AppError::validation(vec![crate::error::FieldError {
            field: String::new(),
            message: if message.starts_with("invalid") {
                "a field has an invalid value".into()
            } else {
                message
            },
        }])
    })?;
    let mut input = input;
    let consent = input
        .credit_consent
        .take()
        .map(|c| c.validate(time::OffsetDateTime::now_utc()));
    let (lead, credit) = match (input.validate(today()), consent.transpose()) {
        (Ok(lead), Ok(credit)) => (lead, credit),
        (lead, credit) => {
            let mut errors = lead.err().unwrap_or_default();
            errors.extend(credit.err().unwrap_or_default());
            return Err(AppError::validation(errors));
        }
    };
    let changed: Vec<String> = patch
        .as_object()
        .map(|o| {
            o.keys()
                .filter(|k| before.get(*k) != merged.get(*k))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let index_key = state
        .keys
        .ssn_index_key(&state.db)
        .await
        .map_err(kms_unavailable)?;
    let sealed = seal_lead(&lead, id, &key, &index_key);
    // language=PostgreSQL
    let update = sqlx::query(
        "update leads set first_name = $2, last_name = $3, email_enc = $4, phone_enc = $5,
                ssn_enc = $6, ssn_index = $7, date_of_birth_enc = $8, annual_income_enc = $9,
                address_enc = $10, notes_enc = $11, loan_purpose = $12, source = $13, status = $14,
                version = version + 1, updated_at = now()
          where id = $1",
    )
    .bind(id);
    bind_fields(update, &lead, &sealed)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: id,
            actor: &actor,
            action: "lead.updated",
            entity_type: "lead",
            entity_id: id,
            request_id: Some(&request_id.0),
            details: json!({ "fields": changed }),
        },
    )
    .await?;
    // An update carrying a credit consent requests that pull, in the same transaction.
    if let Some((pull_type, consent)) = &credit {
        crate::http::credit::queue_pull(
            &state,
            &mut tx,
            &actor,
            id,
            *pull_type,
            consent,
            ("new", None),
            &request_id.0,
        )
        .await?;
    }
    let row = fetch_lead(&mut tx, id, &ReadScope::All, false)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the lead just updated is missing"))?;
    tx.commit().await?;
    let view = render(&row, &key, &actor, false)?;
    let mut response = AppJson(&view).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, etag(view.version));
    Ok(response)
}
