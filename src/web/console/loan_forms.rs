//! The loan page's forms: status, needs list, documents, upload links, credit and the LOS.
//! Each calls the operation the JSON API calls and goes back to the loan page, or shows it
//! again with the refusal.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use uuid::Uuid;

use super::forms::{
    Fields, FormResult, back_to_loan, consent_of, fields, get, unreadable, version_of,
};
use super::pages::{finish, loan_page};
use super::session::Viewer;
use crate::error::AppError;
use crate::state::AppState;

/// `POST /console/loans/{id}/status`: a transition the page offered (`loans::ops::transition`
/// decides, as for the API).
pub async fn transition(
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
        let request = serde_json::from_value::<crate::loans::TransitionRequest>(json!({
            "status": get(&form, "status").unwrap_or_default(),
            "reason": get(&form, "reason"),
        }))
        .map_err(|_| unreadable("status"));
        let version = version_of(&form);
        let outcome = match request {
            Ok(request) => {
                crate::loans::ops::transition(&state, &actor, id, version, &request, &request_id)
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        };
        back_to_loan(&state, &actor, &session, id, outcome).await
    }
    .await;
    finish(result, &actor, &session)
}

/// `POST /console/loans/{id}/requests`: add a document request to the needs list.
pub async fn add_request(
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
        let outcome = match get(&form, "doc_type").and_then(crate::domain::DocType::parse) {
            Some(doc_type) => crate::requests::ops::ask(
                &state,
                &actor,
                id,
                doc_type,
                (
                    get(&form, "note").unwrap_or_default(),
                    get(&form, "due_date"),
                ),
                &request_id,
            )
            .await
            .map(|_| ()),
            None => Err(unreadable("doc_type")),
        };
        back_to_loan(&state, &actor, &session, id, outcome).await
    }
    .await;
    finish(result, &actor, &session)
}

/// `POST /console/loans/{id}/links`: create an upload link; the page shows it once.
pub async fn create_link(
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
        let number = |name: &str| get(&form, name).and_then(|v| v.parse::<i64>().ok());
        let input = serde_json::from_value::<crate::links::NewLink>(json!({
            "borrower_email": get(&form, "borrower_email"),
            "expires_in_hours": number("expires_in_hours"),
            "max_files": number("max_files"),
            "language": get(&form, "language"),
        }))
        .map_err(|_| unreadable("link"));
        let created = match input {
            Ok(input) => crate::links::ops::create(&state, &actor, id, input, &request_id).await,
            Err(e) => Err(e),
        };
        match created {
            Ok(link) => {
                let mut response =
                    loan_page(&state, &actor, &session, id, json!({ "new_link": link })).await?;
                *response.status_mut() = StatusCode::CREATED;
                Ok(response)
            }
            Err(e) => back_to_loan(&state, &actor, &session, id, Err(e)).await,
        }
    }
    .await;
    finish(result, &actor, &session)
}

/// The loan a form names in its hidden `loan_id` (where to go back to).
fn loan_of(form: &Fields) -> Result<Uuid, AppError> {
    get(form, "loan_id")
        .and_then(|v| Uuid::parse_str(v).ok())
        .ok_or_else(|| unreadable("loan_id"))
}

/// `POST /console/links/{id}/revoke`.
pub async fn revoke_link(
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
        let loan = loan_of(&form)?;
        let outcome = crate::links::ops::revoke(&state, &actor, id, &request_id).await;
        back_to_loan(&state, &actor, &session, loan, outcome).await
    }
    .await;
    finish(result, &actor, &session)
}

/// `POST /console/documents/{id}/review`: accept, or reject with a reason.
pub async fn review_document(
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
        let loan = loan_of(&form)?;
        let decision = match get(&form, "decision") {
            Some("accept") => Ok(crate::documents::Decision::Accept),
            Some("reject") => Ok(crate::documents::Decision::Reject),
            _ => Err(unreadable("decision")),
        };
        let outcome = match decision {
            Ok(decision) => crate::documents::ops::review_as_written(
                &state,
                &actor,
                id,
                decision,
                get(&form, "reason"),
                &request_id,
            )
            .await
            .map(|_| ()),
            Err(e) => Err(e),
        };
        back_to_loan(&state, &actor, &session, loan, outcome).await
    }
    .await;
    finish(result, &actor, &session)
}

/// `POST /console/documents/{id}/delete`: soft delete.
pub async fn delete_document(
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
        let loan = loan_of(&form)?;
        let outcome = crate::documents::ops::soft_delete(&state, &actor, id, &request_id).await;
        back_to_loan(&state, &actor, &session, loan, outcome).await
    }
    .await;
    finish(result, &actor, &session)
}

/// `POST /console/loans/{id}/credit`: a soft or hard pull of the borrower, with the consent
/// the form records (422 `consent_required` without one, as for the API).
pub async fn request_pull(
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
        let loan = crate::loans::ops::get(&state, &actor, id).await?;
        let outcome = async {
            let pull_type = serde_json::from_value::<crate::leads::credit::PullType>(json!(
                get(&form, "pull_type").unwrap_or_default()
            ))
            .map_err(|_| unreadable("pull_type"))?;
            let consent = consent_of(&form)
                .map(serde_json::from_value::<crate::leads::credit::ConsentInput>)
                .transpose()
                .map_err(|_| unreadable("consent_method"))?;
            crate::leads::credit::ops::request(
                &state,
                &actor,
                loan.lead_id,
                pull_type,
                consent,
                &request_id,
            )
            .await?;
            Ok(())
        }
        .await;
        back_to_loan(&state, &actor, &session, id, outcome).await
    }
    .await;
    finish(result, &actor, &session)
}

/// `POST /console/loans/{id}/los`: ask the LOS to take the loan again (a re-drive).
pub async fn redrive_los(
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
        let outcome = crate::los::ops::request_resubmission(&state, &actor, id, &request_id)
            .await
            .map(|_| ());
        back_to_loan(&state, &actor, &session, id, outcome).await
    }
    .await;
    finish(result, &actor, &session)
}

/// `POST /console/credit/{id}/{reissue|upgrade}`: a follow-up of an earlier pull.
pub async fn follow_up_pull(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((id, kind)): Path<(Uuid, String)>,
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
        let loan = loan_of(&form)?;
        let upgrade = match kind.as_str() {
            "reissue" => false,
            "upgrade" => true,
            _ => return Err(AppError::not_found()),
        };
        // An upgrade to a hard pull needs the borrower's consent to one, as for the API.
        let body = consent_of(&form)
            .map(|consent| {
                serde_json::from_value::<crate::leads::credit::FollowUp>(
                    json!({ "consent": consent }),
                )
            })
            .transpose()
            .map_err(|_| unreadable("consent_method"))?;
        let outcome =
            crate::leads::credit::ops::follow_up(&state, &actor, &request_id, id, body, upgrade)
                .await;
        back_to_loan(&state, &actor, &session, loan, outcome.map(|_| ())).await
    }
    .await;
    finish(result, &actor, &session)
}
