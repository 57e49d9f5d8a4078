//! The agent console (docs/console.md): server-rendered pages for agents, managers,
//! compliance and admins, served by the same binary and embedded in it (air-gapped sites:
//! no CDN, no web fonts). Every page works with plain forms and full page loads; the one
//! script only enhances. The console is a client of the aggregates' operations — the same
//! `ops` the JSON API calls — and has no rules of its own: it shows what an operation
//! answers, including its problem codes.
//!
//! Authentication is the API's cookie session (docs/security.md): a page without a session
//! redirects to sign-in and comes back; every change is a `<form method="post">` with the
//! session's `csrf_token` (403 `csrf_failed` without it); sessions end after
//! `auth.idle_timeout_secs` without a request.

mod forms;
mod loan_forms;
mod pages;
mod records;
mod session;
mod view;

use axum::routing::{get, post};
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub use view::content_security_policy;

/// `/` and `/console/…`; every `/console/` route behind the session middleware.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let pages = OpenApiRouter::new()
        .route("/console/", get(pages::pipeline))
        .route("/console/team", get(pages::team))
        .route("/console/leads", get(pages::leads).post(forms::create_lead))
        .route("/console/leads/new", get(pages::new_lead))
        .route(
            "/console/leads/{id}",
            get(pages::lead).post(forms::edit_lead),
        )
        .route("/console/leads/{id}/loans", post(forms::create_loan))
        .route("/console/leads/{id}/sms", post(forms::sms_consent))
        .route("/console/loans/{id}", get(pages::loan))
        .route("/console/loans/{id}/status", post(loan_forms::transition))
        .route(
            "/console/loans/{id}/requests",
            post(loan_forms::add_request),
        )
        .route("/console/loans/{id}/links", post(loan_forms::create_link))
        .route("/console/loans/{id}/credit", post(loan_forms::request_pull))
        .route("/console/loans/{id}/los", post(loan_forms::redrive_los))
        .route("/console/links/{id}/revoke", post(loan_forms::revoke_link))
        .route(
            "/console/documents/{id}/review",
            post(loan_forms::review_document),
        )
        .route(
            "/console/documents/{id}/delete",
            post(loan_forms::delete_document),
        )
        .route(
            "/console/credit/{id}/{kind}",
            post(loan_forms::follow_up_pull),
        )
        .route("/console/audit", get(records::audit))
        .route("/console/audit.csv", get(records::audit_csv))
        .route("/console/admin", get(records::admin))
        .route("/console/retention", get(records::retention))
        .route("/console/loans/{id}/export", get(records::export))
        .route("/console/holds", post(forms::place_hold))
        .route("/console/holds/{id}/lift", post(forms::lift_hold))
        .route(
            "/console/agents/{subject}/{action}",
            post(forms::agent_access),
        )
        .route("/console/sign-out", post(forms::sign_out))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::require_session,
        ));
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(session::home))
        .route("/console", get(session::home))
        .route("/console/assets/console.css", get(view::style))
        .route("/console/assets/console.js", get(view::script))
        .merge(pages)
}
