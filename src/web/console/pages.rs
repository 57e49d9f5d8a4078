//! The console's pages (GET). Each reads through the aggregates' operations with the
//! caller's own rights — a loan of someone else's is the API's 404 — and renders.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::view::{error_page, page};
use crate::auth::{Actor, SideEffects};
use crate::db::Page;
use crate::error::AppError;
use crate::http::auth::middleware::SessionContext;
use crate::loans::LoanStatus;
use crate::loans::pipeline::PipelineFilter;
use crate::state::AppState;

/// The result of a page's work, drawn as the page or as the error page.
pub fn finish(
    result: Result<Response, AppError>,
    actor: &Actor,
    session: &SessionContext,
) -> Response {
    result.unwrap_or_else(|e| error_page(e, Some((actor, session))))
}

fn status_of(name: Option<&str>) -> Option<LoanStatus> {
    let name = name?;
    LoanStatus::ALL.into_iter().find(|s| s.as_str() == name)
}

pub fn checked(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|v| !v.is_empty())
}

pub fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

#[derive(Debug, Default, Deserialize)]
pub struct PipelineQuery {
    status: Option<String>,
    attention: Option<String>,
    outstanding: Option<String>,
    overdue: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
}

/// The home page: status counts and the caller's loans by last activity, filtered.
pub async fn pipeline(
    State(state): State<AppState>,
    actor: Actor,
    Extension(session): Extension<SessionContext>,
    query: Result<Query<PipelineQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = query.unwrap_or_default();
    let result = async {
        let filter = PipelineFilter {
            status: status_of(non_empty(&query.status)),
            needs_attention: checked(&query.attention),
            outstanding: checked(&query.outstanding),
            overdue: checked(&query.overdue),
            name_pattern: non_empty(&query.q)
                .filter(|q| q.chars().count() <= 100)
                .map(crate::leads::ops::name_pattern),
            before: non_empty(&query.cursor).and_then(crate::loans::pipeline::parse_cursor),
            lead: None,
        };
        let loans = crate::loans::pipeline::page(&state, &actor, &filter, 50).await?;
        let counts = crate::loans::ops::status_counts(&state, &actor).await?;
        let next = loans.next_cursor.as_ref().map(|cursor| {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in [
                ("status", &query.status),
                ("attention", &query.attention),
                ("outstanding", &query.outstanding),
                ("overdue", &query.overdue),
                ("q", &query.q),
            ] {
                if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                    q.append_pair(k, v);
                }
            }
            q.append_pair("cursor", cursor);
            format!("/console/?{}", q.finish())
        });
        Ok(page(
            StatusCode::OK,
            "pipeline.html",
            &actor,
            &session,
            json!({
                "loans": loans.items,
                "next": next,
                "counts": counts,
                "statuses": LoanStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "filter": {
                    "status": query.status, "attention": checked(&query.attention),
                    "outstanding": checked(&query.outstanding), "overdue": checked(&query.overdue),
                    "q": query.q,
                },
            }),
        ))
    }
    .await;
    finish(result, &actor, &session)
}

/// A manager's team: per-agent loans by status and loans with overdue requests.
pub async fn team(
    State(state): State<AppState>,
    actor: Actor,
    Extension(session): Extension<SessionContext>,
) -> Response {
    let result = async {
        let agents = crate::loans::pipeline::team(&state, &actor).await?;
        Ok(page(
            StatusCode::OK,
            "team.html",
            &actor,
            &session,
            json!({
                "agents": agents,
                "statuses": LoanStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            }),
        ))
    }
    .await;
    finish(result, &actor, &session)
}

#[derive(Debug, Default, Deserialize)]
pub struct LeadsQuery {
    q: Option<String>,
    cursor: Option<String>,
}

/// Leads the caller can see, newest first, searchable by name.
pub async fn leads(
    State(state): State<AppState>,
    actor: Actor,
    Extension(session): Extension<SessionContext>,
    query: Result<Query<LeadsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = query.unwrap_or_default();
    let result = async {
        let filter = crate::leads::store::ListFilter {
            status: None,
            name_pattern: non_empty(&query.q)
                .filter(|q| q.chars().count() <= 100)
                .map(crate::leads::ops::name_pattern),
            created_after: None,
            before: non_empty(&query.cursor).and_then(|c| Uuid::parse_str(c).ok()),
        };
        let list = crate::leads::ops::list(&state, &actor, &filter, 50).await?;
        let next = list.next_cursor.as_ref().map(|cursor| {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            if let Some(text) = non_empty(&query.q) {
                q.append_pair("q", text);
            }
            q.append_pair("cursor", cursor);
            format!("/console/leads?{}", q.finish())
        });
        Ok(page(
            StatusCode::OK,
            "leads.html",
            &actor,
            &session,
            json!({ "leads": list.items, "next": next, "q": query.q }),
        ))
    }
    .await;
    finish(result, &actor, &session)
}

/// The empty lead form.
pub async fn new_lead(actor: Actor, Extension(session): Extension<SessionContext>) -> Response {
    if let Err(e) = actor.write_scope() {
        return error_page(e, Some((&actor, &session)));
    }
    page(
        StatusCode::OK,
        "lead_form.html",
        &actor,
        &session,
        json!({ "lead": {}, "errors": {}, "action": "/console/leads" }),
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct LeadQuery {
    reveal: Option<String>,
}

/// A lead: masked PII (the SSN revealed on request, step-up and audit as the API does),
/// its loans, the edit form, SMS consent and the new-loan form.
pub async fn lead(
    State(state): State<AppState>,
    viewer: super::session::Viewer,
    Path(id): Path<Uuid>,
    query: Result<Query<LeadQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let super::session::Viewer {
        actor,
        session,
        side_effects,
        request_id,
    } = viewer;
    let Query(query) = query.unwrap_or_default();
    let reveal = query.reveal.as_deref() == Some("ssn");
    let result = async {
        let lead =
            crate::leads::ops::get(&state, &actor, id, reveal, &side_effects, &request_id).await?;
        let filter = PipelineFilter {
            lead: Some(id),
            ..PipelineFilter::default()
        };
        let loans = crate::loans::pipeline::page(&state, &actor, &filter, 50).await?;
        Ok(lead_page(
            &actor,
            &session,
            &lead,
            &loans.items,
            reveal,
            json!({}),
        ))
    }
    .await;
    finish(result, &actor, &session)
}

/// The lead page, with `errors` (field → message) from a form that failed.
pub fn lead_page(
    actor: &Actor,
    session: &SessionContext,
    lead: &crate::leads::Lead,
    loans: &[crate::loans::pipeline::PipelineLoan],
    revealed: bool,
    errors: Value,
) -> Response {
    let status = if errors.as_object().is_some_and(|e| !e.is_empty()) {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    page(
        status,
        "lead.html",
        actor,
        session,
        json!({
            "lead": lead,
            "loans": loans,
            "revealed": revealed,
            "errors": errors,
            "loan_types": ["conventional", "fha", "va", "usda", "jumbo"],
            "today": OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
        }),
    )
}

/// Everything about one loan an agent works on, each section from its own operation.
pub async fn loan(
    State(state): State<AppState>,
    actor: Actor,
    Extension(session): Extension<SessionContext>,
    Path(id): Path<Uuid>,
) -> Response {
    let result = loan_page(&state, &actor, &session, id, json!({})).await;
    finish(result, &actor, &session)
}

fn first(limit: i64) -> Page<Uuid> {
    Page { limit, after: None }
}

/// The loan page; `extra` adds to its context (a link just created, a form's errors).
pub async fn loan_page(
    state: &AppState,
    actor: &Actor,
    session: &SessionContext,
    id: Uuid,
    extra: Value,
) -> Result<Response, AppError> {
    let loan = crate::loans::ops::get(state, actor, id).await?;
    let borrower =
        crate::leads::ops::get(state, actor, loan.lead_id, false, &SideEffects(false), "").await?;
    let moves = crate::loans::ops::moves_for(actor, &loan);
    let history = crate::loans::ops::history(
        state,
        actor,
        id,
        Page {
            limit: 200,
            after: None,
        },
    )
    .await?;
    let requests = crate::requests::ops::list(state, actor, id, first(200)).await?;
    let documents = crate::documents::ops::list(state, actor, id, first(200)).await?;
    let links = crate::links::ops::list(state, actor, id, first(50)).await?;
    let pulls = crate::leads::credit::ops::list(state, actor, loan.lead_id, first(20)).await?;
    let notifications = crate::notifications::ops::for_loan(state, actor, id, first(50)).await?;
    let step_up_fresh = actor
        .require_recent_auth(state.settings.auth.step_up_max_age_secs)
        .is_ok();
    let mut context = json!({
        "loan": loan,
        "borrower": borrower,
        "moves": moves.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "history": history.items,
        "requests": requests.items,
        "documents": documents.items,
        "links": links.items,
        "pulls": pulls.items,
        "notifications": notifications.items,
        "masked": actor.masks(&loan.owner, loan.team.as_deref()),
        "can_write": actor.write_scope().is_ok(),
        "step_up_fresh": step_up_fresh,
        "doc_types": crate::domain::DocType::ALL.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        "today": OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
        "errors": {},
    });
    if let (Value::Object(map), Value::Object(more)) = (&mut context, extra) {
        map.extend(more);
    }
    let status = if context["errors"].as_object().is_some_and(|e| !e.is_empty()) {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(page(status, "loan.html", actor, session, context))
}
