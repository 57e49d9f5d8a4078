//! The borrower's SMS opt-in (TCPA): recorded with who, when and how; `DELETE` opts out at
//! once. No SMS leaves without a current opt-in.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Actor;
use crate::error::{AppError, AppJson, FieldError};
use crate::http::edge::RequestId;
use crate::leads::credit::ConsentMethod;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(record, opt_out))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsConsentInput {
    /// RFC 3339; not in the future.
    obtained_at: String,
    method: ConsentMethod,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SmsConsent {
    obtained_at: String,
    method: String,
    obtained_by: String,
}

/// Record the borrower's SMS opt-in.
#[utoipa::path(post, path = "/v1/leads/{id}/sms-consent", tag = "leads", params(("id" = Uuid, Path)),
    request_body = SmsConsentInput, responses((status = 200, description = "Recorded", body = SmsConsent)))]
async fn record(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(lead): Path<Uuid>,
    AppJson(input): AppJson<SmsConsentInput>,
) -> Result<AppJson<SmsConsent>, AppError> {
    let obtained_at = OffsetDateTime::parse(&input.obtained_at, &Rfc3339)
        .ok()
        .filter(|t| *t <= OffsetDateTime::now_utc() + time::Duration::minutes(5))
        .ok_or_else(|| {
            AppError::validation(vec![FieldError {
                field: "obtained_at".into(),
                message: "must be an RFC 3339 time, not in the future".into(),
            }])
        })?;
    crate::leads::ops::record_sms_consent(
        &state,
        &actor,
        lead,
        obtained_at,
        input.method,
        &request_id.0,
    )
    .await?;
    Ok(AppJson(SmsConsent {
        obtained_at: crate::http::support::rfc3339(obtained_at),
        method: input.method.as_str().to_owned(),
        obtained_by: actor.subject.clone(),
    }))
}

/// Opt the borrower out of SMS, at once.
#[utoipa::path(delete, path = "/v1/leads/{id}/sms-consent", tag = "leads", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Opted out")))]
async fn opt_out(
    State(state): State<AppState>,
    actor: Actor,
    request_id: RequestId,
    Path(lead): Path<Uuid>,
) -> Result<Response, AppError> {
    crate::leads::ops::sms_opt_out(&state, &actor, lead, &request_id.0).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
