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
#[utoipa::path(get, path = "/", tag = "console",
    responses((status = 303, description = "To the console (`/console/`) with a session, else to sign-in (`/auth/login?return_to=%2Fconsole%2F`)")))]
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
        .unwrap_or_else(|| page_of_form(request.uri().path()))
}

/// The page a form at `path` belongs to, when the request says nothing of where it came
/// from: `/console/loans/{id}/…` and `/console/leads/{id}/…` go back to that loan or lead.
fn page_of_form(path: &str) -> String {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("console"), Some(kind @ ("loans" | "leads")), Some(id))
            if uuid::Uuid::parse_str(id).is_ok() =>
        {
            format!("/console/{kind}/{id}")
        }
        _ => "/console/".to_owned(),
    }
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `path` without the borrower-name search (`q`): a return address is stored with the
/// login, and a borrower's name has no business there.
fn without_search(path: &str) -> String {
    let Some((route, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let kept: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k != "q")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        return route.to_owned();
    }
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    serializer.extend_pairs(kept);
    format!("{route}?{}", serializer.finish())
}

/// A form posted without a live session: a page with a link to sign in, not a redirect (the
/// CSP's `form-action 'self'` would stop a redirect that leaves for the provider).
fn signed_out_form(return_to: &str) -> Response {
    let mut response = super::view::message_page(
        StatusCode::UNAUTHORIZED,
        "Signed out",
        "Your session has ended, so this change was not made. Sign in again, then make it again.",
    );
    if let Ok(link) = HeaderValue::from_str(&format!(
        "</auth/login?return_to={}>; rel=\"login\"",
        percent(return_to)
    )) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

/// A form's `form_id` (a nonce each page draws) used for the first time by `subject`: a
/// second submission of the same form — a double click, a resent POST — is not run again.
/// Without Redis the form runs (the operations themselves refuse most repeats).
async fn first_submission(state: &AppState, subject: &str, form_id: &str) -> bool {
    if form_id.len() > 64
        || !form_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return true;
    }
    let key = state.cache.key(&format!(
        "console-form:{}:{form_id}",
        crate::crypto::token_hash(subject)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let claimed = async {
        let mut connection = state.cache.connection().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(3600)
            .query_async(&mut connection)
            .await?;
        anyhow::Ok(set.is_some())
    }
    .await;
    claimed.unwrap_or(true)
}

/// What the middleware reads from a request before it may run: where it comes from and
/// goes back to, and its credentials.
struct Arrival {
    is_get: bool,
    here: String,
    from_page: String,
    return_to: String,
    request_id: Option<String>,
    same_origin: bool,
    csrf: Option<String>,
}

impl Arrival {
    fn of(request: &Request) -> Self {
        let is_get = request.method().is_safe();
        let here = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/console/".to_owned());
        let from_page = referring_page(request);
        let return_to = without_search(if is_get { &here } else { &from_page });
        Arrival {
            is_get,
            here,
            from_page,
            return_to,
            request_id: request.extensions().get::<RequestId>().map(|r| r.0.clone()),
            same_origin: request
                .headers()
                .get("sec-fetch-site")
                .is_some_and(|v| v.as_bytes() == b"same-origin"),
            csrf: request
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }

    /// No live session: sign in (a page), or a page that says the change was not made (a
    /// form).
    fn signed_out(&self) -> Response {
        if self.is_get {
            to_sign_in(&self.return_to)
        } else {
            signed_out_form(&self.return_to)
        }
    }
}

pub async fn require_session(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let mut arrival = Arrival::of(&request);
    let Some(id) = cookie_value(
        request.headers(),
        session::cookie_name(state.settings.auth.cookie_secure),
    ) else {
        return arrival.signed_out();
    };
    let (mut parts, body) = request.into_parts();
    let (body, form_id) = if arrival.is_get {
        (body, None)
    } else {
        match read_form(body).await {
            Ok((bytes, token, form_id)) => {
                arrival.csrf = arrival.csrf.or(token);
                (bytes, form_id)
            }
            Err(too_large) => return too_large,
        }
    };
    let authenticated = authenticate_cookie(
        &state,
        id,
        !arrival.is_get,
        arrival.csrf.take(),
        arrival.same_origin,
        arrival.request_id.as_deref(),
    )
    .await;
    let (actor, context, side_effects) = match authenticated {
        Ok(found) => found,
        Err(AppError::Auth(AuthError::SessionExpired | AuthError::MissingCredentials)) => {
            return arrival.signed_out();
        }
        Err(AppError::Auth(AuthError::CsrfFailed)) => {
            return AppError::Auth(AuthError::CsrfFailed).into_response();
        }
        Err(other) => return super::view::error_page(other, None),
    };
    if let Some(form_id) = form_id
        && !first_submission(&state, &actor.subject, &form_id).await
    {
        return Redirect::to(&arrival.from_page).into_response();
    }
    tracing::Span::current().record("principal", actor.subject.as_str());
    parts.extensions.insert(actor);
    parts.extensions.insert(side_effects);
    parts.extensions.insert(context);
    let response = next.run(Request::from_parts(parts, body)).await;
    if response.extensions().get::<StepUp>().is_some() {
        // Back to the page the request came from (an audited GET such as a reveal must be
        // asked again from the page: coming back from the provider is a cross-site
        // navigation, which the API does not let perform it).
        let back = if arrival.is_get && arrival.from_page == "/console/" {
            arrival.here.split('?').next().unwrap_or("/console/")
        } else {
            &arrival.from_page
        };
        return to_reauth(&without_search(back));
    }
    response
}

/// The form body (at most `FORM_LIMIT` bytes) with its `csrf_token` and `form_id` fields,
/// or the 413 answer.
async fn read_form(body: Body) -> Result<(Body, Option<String>, Option<String>), Response> {
    let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
        return Err(AppError::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "the form is too large",
        )
        .into_response());
    };
    let token = form_field(&bytes, "csrf_token");
    let form_id = form_field(&bytes, "form_id");
    Ok((Body::from(bytes), token, form_id))
}

/// 303 to a fresh sign-in (step-up) that comes back to `page`.
fn to_reauth(page: &str) -> Response {
    let mut redirect =
        Redirect::to(&format!("/auth/reauth?return_to={}", percent(page))).into_response();
    redirect
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    redirect
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_without_a_referer_goes_back_to_its_loan_or_lead() {
        let id = "0190c6a2-0000-7000-8000-000000000001";
        assert_eq!(
            page_of_form(&format!("/console/loans/{id}/links")),
            format!("/console/loans/{id}")
        );
        assert_eq!(
            page_of_form(&format!("/console/leads/{id}")),
            format!("/console/leads/{id}")
        );
        assert_eq!(page_of_form("/console/loans/not-an-id/links"), "/console/");
        assert_eq!(page_of_form("/console/documents/x/review"), "/console/");
    }

    #[test]
    fn a_return_address_never_keeps_the_name_search() {
        assert_eq!(
            without_search("/console/?q=Reyes&status=draft"),
            "/console/?status=draft"
        );
        assert_eq!(without_search("/console/?q=Reyes"), "/console/");
        assert_eq!(without_search("/console/leads/1"), "/console/leads/1");
    }
}
