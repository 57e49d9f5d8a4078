//! The console's forms (POST). Each reads its fields, calls the same operation as the JSON
//! API and then redirects (303) to the page that shows the result; a refused change shows
//! the page again with the API's problem — field messages next to their fields.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::pages::{finish, lead_page, loan_page};
use super::session::Viewer;
use super::view::{error_page, message_page, page, problem_of};
use crate::auth::Actor;
use crate::error::{AppError, ErrorCode};
use crate::http::auth::middleware::SessionContext;
use crate::loans::pipeline::PipelineFilter;
use crate::state::AppState;

pub type Fields = HashMap<String, String>;
pub type FormResult = Result<Form<Fields>, axum::extract::rejection::FormRejection>;

pub fn fields(form: FormResult) -> Result<Fields, AppError> {
    form.map(|Form(f)| f).map_err(|_| {
        AppError::client(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedRequest,
            "send the form as application/x-www-form-urlencoded",
        )
    })
}

/// A field's trimmed value; absent when empty.
pub fn get<'a>(form: &'a Fields, name: &str) -> Option<&'a str> {
    form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// A refusal a form shows next to its fields (422, 409, 412): the problem's field errors as
/// `field → message`, its detail and code under `_`. Any other error is the error page's.
fn error_map(error: AppError) -> Result<Value, AppError> {
    let shown_on_form = matches!(
        &error,
        AppError::Client { status, .. }
            if *status == StatusCode::UNPROCESSABLE_ENTITY
                || *status == StatusCode::CONFLICT
                || *status == StatusCode::PRECONDITION_FAILED
    );
    if !shown_on_form {
        return Err(error);
    }
    let problem = problem_of(error);
    let mut map = Map::new();
    for e in &problem.errors {
        map.insert(e.field.clone(), Value::String(e.message.clone()));
    }
    map.insert(
        "_".into(),
        Value::String(format!("{} ({})", problem.detail, problem.code)),
    );
    Ok(Value::Object(map))
}

fn address_of(form: &Fields, prefix: &str) -> Value {
    if get(form, &format!("{prefix}line1")).is_none()
        && get(form, &format!("{prefix}city")).is_none()
    {
        return Value::Null;
    }
    json!({
        "line1": get(form, &format!("{prefix}line1")).unwrap_or_default(),
        "line2": get(form, &format!("{prefix}line2")),
        "city": get(form, &format!("{prefix}city")).unwrap_or_default(),
        "state": get(form, &format!("{prefix}state")).unwrap_or_default(),
        "postal_code": get(form, &format!("{prefix}postal_code")).unwrap_or_default(),
    })
}

/// The lead form's fields as the API's lead body: filled fields as written; on an edit, a
/// field the form showed and the agent emptied is `null` (cleared, or refused when the API
/// requires it) — except the SSN, which the edit form never shows.
fn lead_body(form: &Fields) -> Value {
    let mut body = Map::new();
    for name in [
        "first_name",
        "last_name",
        "email",
        "phone",
        "ssn",
        "date_of_birth",
        "annual_income",
        "loan_purpose",
        "source",
        "notes",
    ] {
        match get(form, name) {
            Some(v) => {
                body.insert(name.into(), Value::String(v.to_owned()));
            }
            None if form.contains_key("version") && form.contains_key(name) && name != "ssn" => {
                body.insert(name.into(), Value::Null);
            }
            None => {}
        }
    }
    let address = address_of(form, "address_");
    if !address.is_null() {
        body.insert("address".into(), address);
    }
    if let (Some(pull_type), Some(Value::Object(mut consent))) =
        (get(form, "consent_pull_type"), consent_of(form))
    {
        consent.insert("pull_type".into(), Value::String(pull_type.to_owned()));
        body.insert("credit_consent".into(), Value::Object(consent));
    }
    Value::Object(body)
}

/// The borrower's credit consent a form records (`consent_method`, `consent_text_version`,
/// `consent_ip`), obtained now, in the API's consent shape; none without a method.
pub fn consent_of(form: &Fields) -> Option<Value> {
    let method = get(form, "consent_method")?;
    Some(json!({
        "obtained_at": OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
        "method": method,
        "text_version": get(form, "consent_text_version").unwrap_or_default(),
        "ip": get(form, "consent_ip"),
    }))
}

/// The `version` a form was drawn with (the API's `If-Match`).
pub fn version_of(form: &Fields) -> Result<i64, AppError> {
    get(form, "version")
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| unreadable("version"))
}

pub fn unreadable(what: &str) -> AppError {
    AppError::validation(vec![crate::error::FieldError {
        field: what.to_owned(),
        message: "is not valid".to_owned(),
    }])
}

/// `POST /console/leads`: create a lead (`leads::ops::create_from_input`).
pub async fn create_lead(
    State(state): State<AppState>,
    viewer: Viewer,
    form: FormResult,
) -> Response {
    let Viewer {
        actor,
        session,
        request_id,
        ..
    } = viewer;
    let result = async {
        let form = fields(form)?;
        let body = lead_body(&form);
        let created = match serde_json::from_value(body) {
            Ok(input) => {
                crate::leads::ops::create_from_input(&state, &actor, input, &request_id).await
            }
            Err(_) => Err(unreadable("lead")),
        };
        match created {
            // A possible duplicate (the same SSN on another lead) is told once, with the
            // answer to the creation: it is not stored.
            Ok(lead)
                if lead
                    .possible_duplicates
                    .as_ref()
                    .is_some_and(|d| !d.is_empty()) =>
            {
                let mut response = lead_page(&actor, &session, &lead, &[], false, json!({}));
                *response.status_mut() = StatusCode::CREATED;
                Ok(response)
            }
            Ok(lead) => Ok(see_other(&format!("/console/leads/{}", lead.id))),
            Err(e) => {
                let mut shown = form.clone();
                shown.remove("ssn");
                shown.remove("csrf_token");
                Ok(page(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "lead_form.html",
                    &actor,
                    &session,
                    json!({ "lead": shown, "errors": error_map(e)?, "action": "/console/leads" }),
                ))
            }
        }
    }
    .await;
    finish(result, &actor, &session)
}

/// Show the lead page again with `errors`.
async fn lead_again(
    state: &AppState,
    actor: &Actor,
    session: &SessionContext,
    id: Uuid,
    errors: Value,
) -> Result<Response, AppError> {
    let lead = crate::leads::ops::get(
        state,
        actor,
        id,
        false,
        &crate::auth::SideEffects(false),
        "",
    )
    .await?;
    let filter = PipelineFilter {
        lead: Some(id),
        ..PipelineFilter::default()
    };
    let loans = crate::loans::pipeline::page(state, actor, &filter, 50).await?;
    Ok(lead_page(
        actor,
        session,
        &lead,
        &loans.items,
        false,
        errors,
    ))
}

/// `POST /console/leads/{id}`: change a lead (a JSON merge patch of the filled fields;
/// `version` is the `If-Match` the page was drawn with).
pub async fn edit_lead(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<Uuid>,
    form: FormResult,
) -> Response {
    let Viewer {
        actor,
        session,
        request_id,
        ..
    } = viewer;
    let result = async {
        let form = fields(form)?;
        let version = version_of(&form);
        let patch = lead_body(&form);
        match crate::leads::ops::patch(&state, &actor, id, version, &patch, &request_id).await {
            Ok(_) => Ok(see_other(&format!("/console/leads/{id}"))),
            Err(e) => lead_again(&state, &actor, &session, id, error_map(e)?).await,
        }
    }
    .await;
    finish(result, &actor, &session)
}

/// `POST /console/leads/{id}/loans`: open a loan for the lead (`loans::ops::create`).
pub async fn create_loan(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(lead_id): Path<Uuid>,
    form: FormResult,
) -> Response {
    let Viewer {
        actor,
        session,
        request_id,
        ..
    } = viewer;
    let result = async {
        let form = fields(form)?;
        let body = json!({
            "lead_id": lead_id,
            "loan_type": get(&form, "loan_type").unwrap_or_default(),
            "amount": get(&form, "amount").unwrap_or_default(),
            "property": address_of(&form, "property_"),
        });
        let created = match serde_json::from_value(body) {
            Ok(input) => crate::loans::ops::create(&state, &actor, input, &request_id).await,
            Err(_) => Err(unreadable("loan")),
        };
        match created {
            Ok(loan) => Ok(see_other(&format!("/console/loans/{}", loan.id))),
            Err(e) => lead_again(&state, &actor, &session, lead_id, error_map(e)?).await,
        }
    }
    .await;
    finish(result, &actor, &session)
}

/// `POST /console/leads/{id}/sms`: record the borrower's SMS opt-in, or opt them out.
pub async fn sms_consent(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<Uuid>,
    form: FormResult,
) -> Response {
    let Viewer {
        actor,
        session,
        request_id,
        ..
    } = viewer;
    let result = async {
        let form = fields(form)?;
        let done = match get(&form, "action") {
            Some("opt_out") => {
                crate::leads::ops::sms_opt_out(&state, &actor, id, &request_id).await
            }
            // The API's own consent methods: the type decides, not a list kept here.
            _ => match get(&form, "method").and_then(|m| {
                serde_json::from_value::<crate::leads::credit::ConsentMethod>(json!(m)).ok()
            }) {
                Some(method) => {
                    crate::leads::ops::record_sms_consent(
                        &state,
                        &actor,
                        id,
                        OffsetDateTime::now_utc(),
                        method,
                        &request_id,
                    )
                    .await
                }
                None => Err(unreadable("method")),
            },
        };
        match done {
            Ok(()) => Ok(see_other(&format!("/console/leads/{id}"))),
            Err(e) => lead_again(&state, &actor, &session, id, error_map(e)?).await,
        }
    }
    .await;
    finish(result, &actor, &session)
}

/// Show the loan page again with the refusal, or go back to it.
pub async fn back_to_loan(
    state: &AppState,
    actor: &Actor,
    session: &SessionContext,
    loan: Uuid,
    outcome: Result<(), AppError>,
) -> Result<Response, AppError> {
    match outcome {
        Ok(()) => Ok(see_other(&format!("/console/loans/{loan}"))),
        Err(e) => {
            let errors = error_map(e)?;
            loan_page(state, actor, session, loan, json!({ "errors": errors })).await
        }
    }
}

/// `POST /console/agents/{subject}/{disable|enable}` (admin; disabling ends every session).
pub async fn agent_access(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((subject, action)): Path<(String, String)>,
) -> Response {
    let Viewer {
        actor,
        session,
        request_id,
        ..
    } = viewer;
    let result = async {
        let disabled = match action.as_str() {
            "disable" => true,
            "enable" => false,
            _ => return Err(AppError::not_found()),
        };
        match crate::agents::ops::set_disabled(
            &state,
            &subject,
            disabled,
            &actor,
            Some(&request_id),
        )
        .await?
        {
            crate::agents::Changed::Unknown => Err(AppError::not_found()),
            _ => Ok(see_other("/console/admin")),
        }
    }
    .await;
    finish(result, &actor, &session)
}

/// `POST /console/sign-out`: end the session (as `POST /auth/logout`) and say so.
pub async fn sign_out(State(state): State<AppState>, viewer: Viewer) -> Response {
    let Viewer {
        actor,
        session,
        request_id,
        ..
    } = viewer;
    match crate::http::session_routes::sign_out(&state, &session, &request_id).await {
        Ok(cookie) => {
            let mut response = message_page(
                StatusCode::OK,
                "Signed out",
                "You are signed out of Loanfolio.",
            );
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
        Err(e) => error_page(e, Some((&actor, &session))),
    }
}

/// `POST /console/holds`: compliance places a legal hold on a lead or a loan (the form on
/// their pages), then goes back to that page.
pub async fn place_hold(
    State(state): State<AppState>,
    viewer: Viewer,
    form: FormResult,
) -> Response {
    let Viewer {
        actor,
        session,
        request_id,
        ..
    } = viewer;
    let result = async {
        let form = fields(form)?;
        let input = serde_json::from_value::<crate::retention::NewLegalHold>(json!({
            "entity_type": get(&form, "entity_type").unwrap_or_default(),
            "entity_id": get(&form, "entity_id").unwrap_or_default(),
            "reason": form.get("reason").cloned().unwrap_or_default(),
            "reference": get(&form, "reference"),
        }))
        .map_err(|_| unreadable("entity_id"))?;
        let back = format!(
            "/console/{}s/{}",
            input.entity_type.as_str(),
            input.entity_id
        );
        match crate::retention::ops::place(&state, &actor, &input, &request_id).await {
            Ok(_) => Ok(see_other(&back)),
            Err(e) => {
                let errors = error_map(e)?;
                match input.entity_type {
                    crate::retention::HeldEntity::Lead => {
                        lead_again(&state, &actor, &session, input.entity_id, errors).await
                    }
                    crate::retention::HeldEntity::Loan => {
                        loan_page(
                            &state,
                            &actor,
                            &session,
                            input.entity_id,
                            json!({ "errors": errors }),
                        )
                        .await
                    }
                }
            }
        }
    }
    .await;
    finish(result, &actor, &session)
}

/// `POST /console/holds/{id}/lift` (compliance).
pub async fn lift_hold(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<Uuid>,
) -> Response {
    let Viewer {
        actor,
        session,
        request_id,
        ..
    } = viewer;
    let result = async {
        crate::retention::ops::lift(&state, &actor, id, &request_id).await?;
        Ok(see_other("/console/retention"))
    }
    .await;
    finish(result, &actor, &session)
}
