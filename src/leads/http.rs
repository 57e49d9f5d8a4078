//! Leads (docs/api.md): create, read (SSN masked unless `?reveal=ssn`, audited), list,
//! JSON merge patch with `If-Match`. Every borrower field except the names is encrypted per
//! field under the lead's own data key; reads are scoped in SQL by the caller's role. Each
//! handler extracts, calls one operation (`ops`) and renders.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::store::ListFilter;
use super::{Lead, LeadInput, LeadList, LeadStatus, Reveal, ops};
use crate::actor::SideEffects;
use crate::auth::Actor;
use crate::error::{AppError, AppJson, ErrorCode};
use crate::http::edge::RequestId;
use crate::http::support::{etag, if_match, malformed};
use crate::state::AppState;

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let creating =
        crate::http::idempotency::layer(state, OpenApiRouter::new().routes(routes!(create_lead)));
    OpenApiRouter::new()
        .routes(routes!(list_leads))
        .routes(routes!(get_lead, patch_lead))
        .merge(creating)
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

fn with_etag(lead: Lead) -> Response {
    let mut response = AppJson(&lead).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, etag(lead.version));
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
    actor: Actor,
    request_id: RequestId,
    AppJson(input): AppJson<LeadInput>,
) -> Result<Response, AppError> {
    Ok(created(
        ops::create_from_input(&state, &actor, input, &request_id.0).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// `ssn` to return the full SSN (audited; needs a recent sign-in).
    #[param(inline)]
    reveal: Option<Reveal>,
}

/// One lead; the SSN masked unless `?reveal=ssn`.
#[utoipa::path(get, path = "/v1/leads/{id}", tag = "leads", params(("id" = Uuid, Path), GetParams),
    responses(
        (status = 200, description = "The lead", body = Lead),
        (status = 404, description = "No such lead (or not yours)", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn get_lead(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    side_effects: SideEffects,
    Path(id): Path<Uuid>,
    query: Result<Query<GetParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let Query(params) = query.map_err(|_| malformed("`reveal` accepts only `ssn`"))?;
    let reveal = matches!(params.reveal, Some(Reveal::Ssn));
    let lead = ops::get(&state, &actor, id, reveal, &side_effects, &request_id.0).await?;
    Ok(with_etag(lead))
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

/// The leads the caller can see, newest first.
#[utoipa::path(get, path = "/v1/leads", tag = "leads", params(ListParams),
    responses((status = 200, description = "A page of leads", body = LeadList)))]
async fn list_leads(
    State(state): State<AppState>,
    actor: Actor,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<AppJson<LeadList>, AppError> {
    let Query(params) = query.map_err(|_| malformed("a query parameter is not valid"))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(malformed("`limit` must be between 1 and 200"));
    }
    let created_after = params
        .created_after
        .as_deref()
        .map(|after| OffsetDateTime::parse(after, &Rfc3339))
        .transpose()
        .map_err(|_| malformed("`created_after` must be an RFC 3339 time"))?;
    let before = params
        .cursor
        .as_deref()
        .map(Uuid::parse_str)
        .transpose()
        .map_err(|_| malformed("`cursor` is not valid"))?;
    let filter = ListFilter {
        status: params.status,
        name_pattern: params
            .q
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(ops::name_pattern),
        created_after,
        before,
    };
    Ok(AppJson(ops::list(&state, &actor, &filter, limit).await?))
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
    actor: Actor,
    request_id: RequestId,
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
            ErrorCode::UnsupportedMediaType,
            "send application/merge-patch+json or application/json",
        ));
    }
    let patch: Value = serde_json::from_slice(&body).map_err(|_| {
        AppError::client(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            "the request body is not valid JSON",
        )
    })?;
    let lead = ops::patch(
        &state,
        &actor,
        id,
        if_match(&headers),
        &patch,
        &request_id.0,
    )
    .await?;
    Ok(with_etag(lead))
}
