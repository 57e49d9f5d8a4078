//! The LOS routes (DESIGN.md §4): the signed milestone webhook, and the agent's re-drive of
//! a loan's LOS submission.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Actor;
use crate::db::{audit, outbox};
use crate::error::{AppError, AppJson, FieldError};
use crate::http::edge::RequestId;
use crate::http::support::writable_loan;
use crate::workers::los::{MILESTONES, Outcome, apply_milestone};

/// Signatures older or newer than this are refused (replay window).
const WINDOW_SECS: i64 = 300;

pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(webhook))
}

pub fn agent_routes(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(resubmit)).route_layer(
        axum::middleware::from_fn_with_state(state.clone(), crate::http::idempotency::require),
    )
}

fn unauthorized(code: &'static str, detail: &str) -> AppError {
    AppError::client(StatusCode::UNAUTHORIZED, code, detail.to_owned())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `t=<unix seconds>,v1=<hex>[,v1=<hex>…]` → (t, signatures).
pub fn parse_signature(header: &str) -> Option<(i64, Vec<Vec<u8>>)> {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "t" => t = v.parse().ok(),
            "v1" => v1.push(unhex(v)?),
            _ => {}
        }
    }
    Some((t?, v1)).filter(|(_, v)| !v.is_empty())
}

/// Whether any `v1` is the HMAC of `"<t>.<body>"` under any accepted secret (constant time).
pub fn verify(
    secrets: &[secrecy::SecretString],
    t: i64,
    body: &[u8],
    signatures: &[Vec<u8>],
) -> bool {
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    secrets.iter().any(|secret| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
        signatures
            .iter()
            .any(|sig| ring::hmac::verify(&key, &message, sig).is_ok())
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MilestoneEvent {
    event_id: String,
    #[serde(rename = "type")]
    kind: String,
    los_loan_id: String,
    loan_id: Option<Uuid>,
    /// underwriting | approved | closed | denied | withdrawn | suspended
    milestone: String,
    occurred_at: String,
}

/// LOS milestone events, signed with `Loanfolio-Signature`.
#[utoipa::path(post, path = "/v1/webhooks/los", tag = "integrations", request_body = MilestoneEvent,
    responses(
        (status = 204, description = "Applied, or already seen"),
        (status = 202, description = "Recorded, not applied (unknown loan or a milestone the status machine does not allow)"),
        (status = 400, description = "Malformed JSON", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "`invalid_signature` or `stale_timestamp`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid event", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn webhook(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let (t, signatures) = headers
        .get("loanfolio-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_signature)
        .ok_or_else(|| {
            unauthorized(
                "invalid_signature",
                "missing or malformed Loanfolio-Signature",
            )
        })?;
    let secrets = state
        .settings
        .los
        .webhook_secrets()
        .map_err(|e| anyhow::anyhow!("LOS webhook secrets: {e}"))?;
    if !verify(&secrets, t, &body, &signatures) {
        return Err(unauthorized(
            "invalid_signature",
            "the signature does not match",
        ));
    }
    if (OffsetDateTime::now_utc().unix_timestamp() - t).abs() > WINDOW_SECS {
        return Err(unauthorized(
            "stale_timestamp",
            "the signature's timestamp is more than 300 s away from now",
        ));
    }
    let event: MilestoneEvent = serde_json::from_slice(&body).map_err(|_| {
        AppError::client(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "the body is not a milestone event".to_owned(),
        )
    })?;
    let mut errors = Vec::new();
    let mut check = |ok: bool, field: &str, message: &str| {
        if !ok {
            errors.push(FieldError {
                field: field.into(),
                message: message.into(),
            });
        }
    };
    check(
        !event.event_id.is_empty() && event.event_id.len() <= 200,
        "event_id",
        "1–200 characters",
    );
    check(
        event.kind == "loan.milestone",
        "type",
        "must be loan.milestone",
    );
    check(
        !event.los_loan_id.is_empty() && event.los_loan_id.len() <= 200,
        "los_loan_id",
        "1–200 characters",
    );
    check(
        MILESTONES.contains(&event.milestone.as_str()),
        "milestone",
        "unknown milestone",
    );
    let occurred_at = OffsetDateTime::parse(&event.occurred_at, &Rfc3339).ok();
    check(
        occurred_at.is_some(),
        "occurred_at",
        "must be an RFC 3339 time",
    );
    if !errors.is_empty() {
        return Err(AppError::validation(errors));
    }

    let mut tx = state.db.begin().await?;
    // The event id is claimed first: concurrent deliveries of one event wait here for the
    // first to commit, then find it taken.
    // language=PostgreSQL
    let fresh = sqlx::query(
        "insert into los_webhook_events (event_id, los_loan_id, milestone, outcome, occurred_at)
         values ($1, $2, $3, 'pending', $4) on conflict (event_id) do nothing",
    )
    .bind(&event.event_id)
    .bind(&event.los_loan_id)
    .bind(&event.milestone)
    .bind(occurred_at)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // language=PostgreSQL
    let loan: Option<Uuid> = sqlx::query_scalar(
        "select id from loans where los_loan_id = $1 and ($2::uuid is null or id = $2)",
    )
    .bind(&event.los_loan_id)
    .bind(event.loan_id)
    .fetch_optional(&mut *tx)
    .await?;
    let outcome = match loan {
        Some(loan) => {
            apply_milestone(
                &state,
                &mut tx,
                loan,
                &event.milestone,
                "webhook",
                &request_id.0,
            )
            .await?
        }
        None => Outcome::UnknownLoan,
    };
    // language=PostgreSQL
    sqlx::query("update los_webhook_events set outcome = $2, loan_id = $3 where event_id = $1")
        .bind(&event.event_id)
        .bind(outcome.as_str())
        .bind(loan)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(match outcome {
        Outcome::Applied | Outcome::Recorded | Outcome::AlreadyThere => StatusCode::NO_CONTENT,
        Outcome::NotAllowed | Outcome::UnknownLoan => StatusCode::ACCEPTED,
    }
    .into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Submission {
    loan_id: Uuid,
    los_loan_id: Option<String>,
    /// `queued`: the LOS submitter will (re)submit the loan.
    submission: &'static str,
}

/// (Re)submit a loan to the LOS; normally automatic when the loan becomes `submitted`.
#[utoipa::path(post, path = "/v1/loans/{id}/los-submission", tag = "loans", params(("id" = Uuid, Path)),
    responses(
        (status = 202, description = "Queued", body = Submission),
        (status = 409, description = "The loan is not submitted or in underwriting", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn resubmit(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(request_id): Extension<RequestId>,
    Path(loan): Path<Uuid>,
) -> Result<Response, AppError> {
    let mut tx = state.db.begin().await?;
    let lead_id = writable_loan(&mut tx, loan, &actor).await?;
    // language=PostgreSQL
    let (status, los_loan_id): (String, Option<String>) =
        sqlx::query_as("select status, los_loan_id from loans where id = $1 for update")
            .bind(loan)
            .fetch_one(&mut *tx)
            .await?;
    if !matches!(status.as_str(), "submitted" | "underwriting") {
        return Err(AppError::client(
            StatusCode::CONFLICT,
            "invalid_state",
            format!("a {status} loan is not submitted to the LOS"),
        ));
    }
    audit::record(
        &mut tx,
        audit::Entry {
            chain: lead_id,
            actor: &actor,
            action: "loan.los_submission_requested",
            entity_type: "loan",
            entity_id: loan,
            request_id: Some(&request_id.0),
            details: json!({}),
        },
    )
    .await?;
    outbox::enqueue(
        &mut tx,
        "los.submission.requested",
        json!({ "loanId": loan }),
        Some(&request_id.0),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        AppJson(Submission {
            loan_id: loan,
            los_loan_id,
            submission: "queued",
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_parse_and_verify_with_any_current_secret() {
        let body = br#"{"event_id":"e1"}"#;
        let t = 1_800_000_000;
        let sign = |secret: &str| {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
            let mut m = format!("{t}.").into_bytes();
            m.extend_from_slice(body);
            ring::hmac::sign(&key, &m)
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let header = format!("t={t},v1={},v1={}", sign("old"), sign("new"));
        let (at, sigs) = parse_signature(&header).unwrap();
        assert_eq!((at, sigs.len()), (t, 2));
        let secrets = |s: &[&str]| {
            s.iter()
                .map(|x| secrecy::SecretString::from(x.to_string()))
                .collect::<Vec<_>>()
        };
        assert!(
            verify(&secrets(&["new"]), t, body, &sigs),
            "rotation: the new secret"
        );
        assert!(verify(&secrets(&["old", "other"]), t, body, &sigs));
        assert!(!verify(&secrets(&["wrong"]), t, body, &sigs));
        assert!(
            !verify(&secrets(&["new"]), t + 1, body, &sigs),
            "the timestamp is signed"
        );
        assert!(
            !verify(&secrets(&["new"]), t, b"{}", &sigs),
            "the body is signed"
        );
        assert!(parse_signature("v1=abcd").is_none(), "no timestamp");
        assert!(parse_signature("t=1").is_none(), "no signature");
        assert!(parse_signature("t=1,v1=zz").is_none(), "not hex");
    }
}
