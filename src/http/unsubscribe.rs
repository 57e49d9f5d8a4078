//! `GET /v1/public/unsubscribe/{token}`: the List-Unsubscribe target of non-transactional
//! email (document reminders). One click, no account: the token is the credential, and only
//! its hash is stored. Transactional messages (the link invitation, a rejection, a status
//! change) keep coming — they are about the borrower's own application.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Actor;
use crate::db::audit;
use crate::error::{AppError, AppJson};
use crate::http::edge::RequestId;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(unsubscribe))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Unsubscribed {
    /// Always true: reminders stop at once (also when already unsubscribed).
    unsubscribed: bool,
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Unsubscribed</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 36rem; margin: 3rem auto; padding: 0 1rem">
<h1>You are unsubscribed</h1>
<p>You will receive no more document reminders. Messages about your application itself —
a new upload link, a document that needs replacing, a change of status — still reach you.</p>
</body></html>"#;

/// One-click unsubscribe from document reminders. Answers an HTML page, or JSON when the
/// client asks for `application/json`.
#[utoipa::path(get, path = "/v1/public/unsubscribe/{token}", tag = "borrowers",
    params(("token" = String, Path)),
    responses(
        (status = 200, description = "Unsubscribed (an HTML page, or JSON on request)", body = Unsubscribed),
        (status = 404, description = "Unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn unsubscribe(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<RequestId>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    let mut tx = state.db.begin().await?;
    // language=PostgreSQL
    let lead: Option<Uuid> =
        sqlx::query_scalar("select lead_id from unsubscribe_tokens where token_hash = $1")
            .bind(crate::http::upload_links::token_hash(&token))
            .fetch_optional(&mut *tx)
            .await?;
    let lead = lead.ok_or_else(AppError::not_found)?;
    // language=PostgreSQL
    let changed = sqlx::query(
        "update leads set email_opted_out_at = now() where id = $1 and email_opted_out_at is null",
    )
    .bind(lead)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed == 1 {
        let borrower = Actor {
            subject: "borrower".into(),
            display_name: "Borrower".into(),
            email: None,
            roles: Vec::new(),
            team: None,
            auth_time: None,
        };
        audit::record(
            &mut tx,
            audit::Entry {
                chain: lead,
                actor: &borrower,
                action: "lead.email_unsubscribed",
                entity_type: "lead",
                entity_id: lead,
                request_id: Some(&request_id.0),
                details: json!({ "scope": "reminders" }),
            },
        )
        .await?;
    }
    tx.commit().await?;
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    Ok(if wants_json {
        AppJson(Unsubscribed { unsubscribed: true }).into_response()
    } else {
        Html(PAGE).into_response()
    })
}
