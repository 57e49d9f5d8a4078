//! The console's door: `/` and every `/console/` page go through the API's cookie session
//! (`http::auth::middleware`), with three differences a browser needs — no session is a
//! redirect to sign-in that comes back to the page, the CSRF token may come as the form's
//! `csrf_token` field (forms cannot set headers), and a step-up is a redirect to
//! `/auth/reauth` rather than a problem document.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::auth::AuthError;
use crate::auth::session;
use crate::error::{AppError, ErrorCode};
use crate::http::auth::middleware::{CSRF_HEADER, authenticate_cookie, cookie_value};
use crate::http::edge::RequestId;
use crate::state::AppState;

/// A console form is a few fields; anything bigger is refused before it is parsed.
const FORM_LIMIT: usize = 64 * 1024;

/// Marks a response that needs a recent sign-in: the middleware turns it into a redirect.
#[derive(Clone)]
pub struct StepUp;

fn percent(path: &str) -> String {
    url::form_urlencoded::byte_serialize(path.as_bytes()).collect()
}

/// 303 to sign-in, coming back to `return_to`.
pub fn to_sign_in(return_to: &str) -> Response {
    Redirect::to(&format!("/auth/login?return_to={}", percent(return_to))).into_response()
}

/// `GET /` and `GET /console`: the console with a session, sign-in without one.
pub async fn home(State(state): State<AppState>, request: Request) -> Response {
    let signed_in = match cookie_value(
        request.headers(),
        session::cookie_name(state.settings.auth.cookie_secure),
    ) {
        Some(id) => session::load(&state.db, &state.cache, &id)
            .await
            .ok()
            .flatten()
            .is_some(),
        None => false,
    };
    if signed_in {
        Redirect::to("/console/").into_response()
    } else {
        to_sign_in("/console/")
    }
}

/// The page a POST came from (its same-origin `Referer`'s path), else the pipeline.
fn referring_page(request: &Request) -> String {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    request
        .headers()
        .get(header::REFERER)
        .and_then(|r| r.to_str().ok())
        .and_then(|r| url::Url::parse(r).ok())
        .filter(|u| host.is_some_and(|h| u.authority() == h))
        .map(|u| match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        })
        .filter(|p| p.starts_with("/console/"))
        .unwrap_or_else(|| "/console/".to_owned())
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub async fn require_session(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let is_get = request.method().is_safe();
    let return_to = if is_get {
        request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/console/".to_owned())
    } else {
        referring_page(&request)
    };
    let Some(id) = cookie_value(
        request.headers(),
        session::cookie_name(state.settings.auth.cookie_secure),
    ) else {
        return to_sign_in(&return_to);
    };
    let request_id = request.extensions().get::<RequestId>().map(|r| r.0.clone());
    let same_origin = request
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"same-origin");
    let mut csrf = request
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (mut parts, body) = request.into_parts();
    let body = if is_get {
        body
    } else {
        let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
            return AppError::client(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                "the form is too large",
            )
            .into_response();
        };
        if csrf.is_none() {
            csrf = form_field(&bytes, "csrf_token");
        }
        Body::from(bytes)
    };
    let authenticated = authenticate_cookie(
        &state,
        id,
        !is_get,
        csrf,
        same_origin,
        request_id.as_deref(),
    )
    .await;
    let (actor, context, side_effects) = match authenticated {
        Ok(found) => found,
        Err(AppError::Auth(AuthError::SessionExpired | AuthError::MissingCredentials)) => {
            return to_sign_in(&return_to);
        }
        Err(AppError::Auth(AuthError::CsrfFailed)) => {
            return AppError::Auth(AuthError::CsrfFailed).into_response();
        }
        Err(other) => return super::view::error_page(other, None),
    };
    tracing::Span::current().record("principal", actor.subject.as_str());
    parts.extensions.insert(actor);
    parts.extensions.insert(side_effects);
    parts.extensions.insert(context);
    let response = next.run(Request::from_parts(parts, body)).await;
    if response.extensions().get::<StepUp>().is_some() {
        let mut redirect = Redirect::to(&format!("/auth/reauth?return_to={}", percent(&return_to)))
            .into_response();
        redirect
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return redirect;
    }
    response
}

/// The signed-in caller of a console page, as the session middleware left it.
pub struct Viewer {
    pub actor: crate::auth::Actor,
    pub session: crate::http::auth::middleware::SessionContext,
    pub side_effects: crate::auth::SideEffects,
    pub request_id: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let found = (
            parts.extensions.get::<crate::auth::Actor>(),
            parts
                .extensions
                .get::<crate::http::auth::middleware::SessionContext>(),
            parts.extensions.get::<crate::auth::SideEffects>(),
        );
        match found {
            (Some(actor), Some(session), Some(side_effects)) => Ok(Viewer {
                actor: actor.clone(),
                session: session.clone(),
                side_effects: *side_effects,
                request_id: parts
                    .extensions
                    .get::<RequestId>()
                    .map(|r| r.0.clone())
                    .unwrap_or_default(),
            }),
            _ => Err(to_sign_in("/console/")),
        }
    }
}
