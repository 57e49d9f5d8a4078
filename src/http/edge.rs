//! The outermost middleware: request id, the request's span, the access log line, metrics,
//! and turning every error response into a problem document carrying the request id.

use std::any::Any;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::{ErrorCode, PROBLEM_JSON, Problem, ProblemMarker};
use crate::metrics::HttpLabels;
use crate::state::AppState;

pub use crate::telemetry::{REQUEST_ID, RequestId, accept_request_id};

pub async fn edge(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = accept_request_id(request.headers().get(REQUEST_ID));
    // Route templates, never raw paths: paths carry ids and upload-link tokens.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = request.method().clone();
    // Where a step-up sends the browser back to: this page, when it was one (GET).
    let return_to = matches!(method, axum::http::Method::GET | axum::http::Method::HEAD)
        .then(|| {
            request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
        })
        .flatten();
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        request.headers_mut().insert(REQUEST_ID, value);
    }

    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        route = route.as_deref().unwrap_or("unmatched"),
        principal = tracing::field::Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    let mut response = finish_problem(response, &request_id, return_to.as_deref()).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }

    let status = response.status();
    let elapsed = started.elapsed();
    let route_label = route.unwrap_or_else(|| "unmatched".to_owned());
    state.metrics.observe_request(
        HttpLabels {
            method: method.to_string(),
            route: route_label,
            status: status.as_u16(),
        },
        elapsed.as_secs_f64(),
    );
    span.in_scope(|| {
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), latency_ms, "request finished");
        } else {
            tracing::info!(status = status.as_u16(), latency_ms, "request finished");
        }
    });
    response
}

/// Stamp the request id into problem documents; turn bare error responses from inner
/// layers (axum's 405, tower-http's 413 and 408) into problem documents.
async fn finish_problem(response: Response, request_id: &str, return_to: Option<&str>) -> Response {
    let status = response.status();
    if let Some(ProblemMarker(problem)) = response.extensions().get::<ProblemMarker>().cloned() {
        let (mut parts, _) = response.into_parts();
        parts.extensions.remove::<ProblemMarker>();
        let mut problem = problem;
        problem.request_id = Some(request_id.to_owned());
        if problem.code == "step_up_required" {
            problem.reauth_url = Some(reauth_url(return_to));
        }
        return rebuild(parts, &problem);
    }
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // Only bare answers (no body type, or axum's and tower-http's plain text) are
    // replaced; a handler's own error document (e.g. /readyz's 503 report) is kept.
    let is_bare = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !is_bare {
        return response;
    }
    let (code, detail) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "the route does not support this method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            (ErrorCode::PayloadTooLarge, "the request body is too large")
        }
        StatusCode::REQUEST_TIMEOUT => (ErrorCode::RequestTimeout, "the request took too long"),
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "the resource does not exist"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            ErrorCode::UnsupportedMediaType,
            "the request body's media type is not supported",
        ),
        StatusCode::NOT_ACCEPTABLE => (ErrorCode::NotAcceptable, "no acceptable representation"),
        s if s.is_server_error() => (
            ErrorCode::InternalError,
            "the server could not complete the request",
        ),
        _ => (ErrorCode::BadRequest, "the request could not be processed"),
    };
    let mut problem = Problem::new(status, code, detail);
    problem.request_id = Some(request_id.to_owned());
    let (parts, _) = response.into_parts();
    rebuild(parts, &problem)
}

/// `/auth/reauth`, returning to `return_to` when it is a local page.
fn reauth_url(return_to: Option<&str>) -> String {
    match return_to.filter(|p| p.starts_with('/') && !p.starts_with("//")) {
        Some(path) => format!(
            "/auth/reauth?return_to={}",
            percent_encoding::utf8_percent_encode(path, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => "/auth/reauth".to_owned(),
    }
}

fn rebuild(mut parts: axum::http::response::Parts, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// A panicking handler answers a plain 500 problem; the panic goes to the log.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::InternalError,
        "the server could not complete the request",
    )
    .into_response()
}
