//! `GET /v1/public/unsubscribe/{token}`: the List-Unsubscribe target of non-transactional
//! email (document reminders). No account: the token is the credential, and only its hash
//! is stored. GET (and HEAD) change nothing — mail scanners and link checkers open every
//! link in a message — it shows a page with one button; the change is a POST to the same
//! URL, which is also RFC 8058's one-click (`List-Unsubscribe-Post`) that mail clients send.
//! Transactional messages (the link invitation, a rejection, a status change) keep coming:
//! they are about the borrower's own application.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{AppError, AppJson};
use crate::http::edge::RequestId;
use crate::notifications::ops;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show, unsubscribe))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Unsubscribed {
    /// Whether reminders to this borrower are off.
    unsubscribed: bool,
}

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 36rem; margin: 3rem auto; padding: 0 1rem">
<h1>{title}</h1>
{body}
</body></html>"#
    );
    let mut response = Html(html).into_response();
    // Inline styles and a form posting to this same URL; nothing else loads or runs.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

const STILL_COMING: &str = "<p>Messages about your application itself — a new upload link, a document that needs replacing, a change of status — still reach you.</p>";

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// The unsubscribe page: a button that stops document reminders. Changes nothing (mail
/// scanners open links); JSON on request: `{unsubscribed}`, the current state.
#[utoipa::path(get, path = "/v1/public/unsubscribe/{token}", tag = "borrowers",
    params(("token" = String, Path)),
    responses(
        (status = 200, description = "The page (or the state as JSON on request)", body = Unsubscribed),
        (status = 404, description = "Unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    let unsubscribed = ops::is_unsubscribed(&state, &token).await?;
    if wants_json(&headers) {
        return Ok(AppJson(Unsubscribed { unsubscribed }).into_response());
    }
    Ok(if unsubscribed {
        page(
            "You are unsubscribed",
            &format!("<p>You receive no document reminders.</p>{STILL_COMING}"),
        )
    } else {
        page(
            "Stop document reminders?",
            &format!(
                r#"<p>You will receive no more reminders about documents still needed for your loan application.</p>
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">Stop reminders</button></form>
{STILL_COMING}"#
            ),
        )
    })
}

/// Unsubscribe from document reminders: the page's button, or a mail client's RFC 8058
/// one-click POST (`List-Unsubscribe=One-Click`). Idempotent.
#[utoipa::path(post, path = "/v1/public/unsubscribe/{token}", tag = "borrowers",
    params(("token" = String, Path)),
    responses(
        (status = 200, description = "Unsubscribed (an HTML page, or JSON on request)", body = Unsubscribed),
        (status = 404, description = "Unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
async fn unsubscribe(
    State(state): State<AppState>,
    request_id: RequestId,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    ops::unsubscribe(&state, &token, &request_id.0).await?;
    Ok(if wants_json(&headers) {
        AppJson(Unsubscribed { unsubscribed: true }).into_response()
    } else {
        page(
            "You are unsubscribed",
            &format!("<p>You will receive no more document reminders.</p>{STILL_COMING}"),
        )
    })
}
