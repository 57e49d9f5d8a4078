//! The OpenAPI document describes every answer an operation can give (docs/api.md): the
//! handlers declare what is particular to them, and [`complete`] adds what the edge and
//! the shared layers can answer on any route of a kind — authentication (401/403), rate
//! limits (429), a dependency down (503), a malformed path or query value (400), an object
//! that is not there or not yours (404), body problems (400/413/415/422), idempotency keys
//! (400/409/422) and preconditions (409/412/428) — so clients and schemathesis's
//! `status_code_conformance` see the API as it is.

use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};

fn problem(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                crate::error::PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

fn describe(status: u16) -> &'static str {
    match status {
        400 => {
            "Malformed request: a path or query value, JSON, or a missing Idempotency-Key (`malformed_request`, `malformed_json`, `idempotency_key_required`)"
        }
        401 => {
            "Not authenticated (`missing_credentials`, `token_expired`, `session_expired`, `step_up_required` with `reauth_url`, …)"
        }
        403 => "Not allowed (`forbidden`, `mfa_required`, `csrf_failed`, `account_disabled`)",
        404 => "No such resource, or not the caller's (`not_found`, `link_not_found`)",
        409 => "Conflict (`invalid_transition`, `idempotency_key_in_flight`, `conflict`)",
        410 => "The upload link expired, was revoked or is used up",
        412 => "`If-Match` does not match the current ETag (`precondition_failed`)",
        413 => "The request body is too large (`payload_too_large`)",
        415 => "The body's media type is not supported (`unsupported_media_type`)",
        422 => "Invalid request (`validation_failed` with `errors`, `idempotency_key_reused`)",
        428 => "`If-Match` is required (`precondition_required`)",
        429 => "Too many requests (`rate_limited`, with `Retry-After`)",
        503 => "A dependency is unavailable (`dependency_unavailable`, with `Retry-After`)",
        _ => "Error",
    }
}

/// The answers every operation of `path` with `method` can give besides its own.
fn shared_answers(path: &str, method: &str, operation: &Operation) -> Vec<u16> {
    let has_body = operation.request_body.is_some();
    let has_query = operation.parameters.as_ref().is_some_and(|p| {
        p.iter()
            .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query))
    });
    let has_path_params = path.contains('{');
    let mut codes = Vec::new();
    let agent = path.starts_with("/v1/")
        && !path.starts_with("/v1/public/")
        && !path.starts_with("/v1/webhooks/");
    if agent || path == "/auth/session" || path == "/auth/logout" {
        codes.extend([401, 403, 429, 503]);
    }
    if path.starts_with("/v1/public/") || path.starts_with("/u/") {
        codes.extend([404, 429, 503]);
        if path.contains("/upload-links/") || path.starts_with("/u/") {
            codes.push(410);
        }
    }
    if path.starts_with("/v1/webhooks/") {
        codes.extend([400, 401, 413, 422, 503]);
    }
    if path.starts_with("/auth/") {
        codes.extend([429, 503]);
    }
    if agent && (has_path_params || has_query) {
        codes.push(400);
    }
    if agent && has_path_params {
        codes.push(404);
    }
    if has_query {
        codes.push(400);
    }
    if has_body {
        codes.extend([400, 413, 415, 422]);
    }
    if agent && method == "post" {
        // Creating routes take Idempotency-Key; others may conflict with the state.
        codes.extend([400, 409, 422]);
    }
    if method == "patch" || path.ends_with("/status") {
        codes.extend([409, 412, 428]);
    }
    if agent && method == "delete" {
        codes.push(409);
    }
    codes.sort_unstable();
    codes.dedup();
    codes
}

/// Add the shared answers (and the bearer requirement of agent routes) to every operation.
pub fn complete(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, operation) in [
            ("get", &mut item.get),
            ("post", &mut item.post),
            ("put", &mut item.put),
            ("patch", &mut item.patch),
            ("delete", &mut item.delete),
        ] {
            let Some(operation) = operation.as_mut() else {
                continue;
            };
            for status in shared_answers(path, method, operation) {
                operation
                    .responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| problem(describe(status)));
            }
            let agent = path.starts_with("/v1/")
                && !path.starts_with("/v1/public/")
                && !path.starts_with("/v1/webhooks/");
            if agent && operation.security.is_none() {
                operation.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
            }
        }
    }
}
