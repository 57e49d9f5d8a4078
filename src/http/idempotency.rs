//! Idempotency keys for creating requests (docs/architecture.md), as a layer: put it on a route
//! with `route_layer` *inside* authentication, since keys are scoped per principal.
//!
//! The same key with the same request replays the stored response with
//! `Idempotent-Replayed: true`; with a different request it is 422 `idempotency_key_reused`;
//! while the first is still running, 409 `idempotency_key_in_flight`; no key at all is 400
//! `idempotency_key_required`. Only successes are stored: a rejected request (validation,
//! conflict, 5xx) frees its key for a retry.
//!
//! Stored bodies can carry borrower PII (a created lead), so they are sealed with AES-GCM
//! under the installation's response key, bound to the principal and the key (AAD); a
//! database reader sees ciphertext only (docs/architecture.md).

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::auth::Actor;
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The product brief's spelling, accepted too.
pub const X_IDEMPOTENCY_KEY: &str = "x-idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";

/// Headers of a stored response worth replaying.
const KEPT_HEADERS: [HeaderName; 3] = [header::LOCATION, header::ETAG, header::CONTENT_TYPE];

fn idempotency_key(headers: &HeaderMap) -> Result<String, AppError> {
    let value = headers
        .get(IDEMPOTENCY_KEY)
        .or_else(|| headers.get(X_IDEMPOTENCY_KEY))
        .ok_or_else(|| {
            AppError::client(
                StatusCode::BAD_REQUEST,
                ErrorCode::IdempotencyKeyRequired,
                "this request creates something: send an Idempotency-Key header",
            )
        })?;
    value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .ok_or_else(|| {
            AppError::client(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedRequest,
                "the Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })
}

/// `routes` with the idempotency layer, and their creating operations documented with the
/// required `Idempotency-Key` header.
pub fn layer(
    state: &AppState,
    mut routes: utoipa_axum::router::OpenApiRouter<AppState>,
) -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{Required, schema::ObjectBuilder, schema::Type};
    for item in routes.get_openapi_mut().paths.paths.values_mut() {
        if let Some(operation) = item.post.as_mut() {
            let header = ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::True)
                .description(Some(
                    "1–255 visible ASCII characters, unique per request you mean to make once \
                     (`X-Idempotency-Key` is accepted too); replays answer the stored response \
                     with `Idempotent-Replayed: true`",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(255))
                        .pattern(Some("^[!-~]+$")),
                ))
                .build();
            let parameters = operation.parameters.get_or_insert_with(Vec::new);
            if !parameters.iter().any(|p| p.name == "Idempotency-Key") {
                parameters.push(header);
            }
        }
    }
    routes.route_layer(axum::middleware::from_fn_with_state(state.clone(), require))
}

pub async fn require(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Reads sharing a path with a creating route (GET and POST /…/upload-links) pass.
    if request.method().is_safe() {
        return next.run(request).await;
    }
    match handle(&state, request, next).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

#[derive(sqlx::FromRow)]
struct StoredKey {
    fingerprint: Vec<u8>,
    state: String,
    expired: bool,
    locked: bool,
    response_status: Option<i16>,
    response_headers: Option<serde_json::Value>,
    response_body: Option<Vec<u8>>,
}

enum Claim {
    Owned,
    Replay(Response),
}

async fn handle(state: &AppState, request: Request, next: Next) -> Result<Response, AppError> {
    let principal = request
        .extensions()
        .get::<Actor>()
        .map(|a| a.subject.clone())
        .ok_or_else(|| anyhow::anyhow!("the idempotency layer runs inside authentication"))?;
    let key = idempotency_key(request.headers())?;
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, state.settings.server.body_limit_bytes)
        .await
        .map_err(|_| {
            AppError::client(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                "the request body is too large",
            )
        })?;
    let fingerprint = fingerprint(&parts, &bytes);
    match claim(state, &principal, &key, &fingerprint).await? {
        Claim::Replay(response) => return Ok(response),
        Claim::Owned => {}
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if !response.status().is_success() {
        release(state, &principal, &key).await;
        return Ok(response);
    }
    store_response(state, (&principal, &key), response).await
}

/// What makes two requests the same: method, path and query, body.
fn fingerprint(parts: &axum::http::request::Parts, body: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("")
            .as_bytes(),
    );
    hasher.update(b"\n");
    hasher.update(body);
    hasher.finalize().to_vec()
}

/// Keep a successful response (sealed) for replays of the key, and pass it on. A failure
/// to keep it loses only the replay copy: the work is done and committed.
async fn store_response(
    state: &AppState,
    (principal, key): (&str, &str),
    response: Response,
) -> Result<Response, AppError> {
    let (principal, key) = (principal.to_owned(), key.to_owned());
    let (mut response_parts, body) = response.into_parts();
    let body = match to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(e) => {
            release(state, &principal, &key).await;
            return Err(anyhow::anyhow!("reading the response to store: {e}").into());
        }
    };
    let headers: serde_json::Map<String, serde_json::Value> = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = response_parts.headers.get(name)?.to_str().ok()?;
            Some((name.as_str().to_owned(), value.into()))
        })
        .collect();
    // A capability shown once (an upload link's token) is not kept for replays.
    let stored_body = match response_parts.extensions.get::<StoreWithout>() {
        Some(StoreWithout(fields)) => redact(&body, fields),
        None => body.to_vec(),
    };
    let sealed = match seal(state, &principal, &key, &stored_body).await {
        Ok(sealed) => sealed,
        Err(e) => {
            // The work is done and committed; only the replay copy is lost.
            tracing::error!(error = %e, "sealing an idempotent response failed");
            release(state, &principal, &key).await;
            response_parts.headers.remove(header::CONTENT_LENGTH);
            return Ok(Response::from_parts(response_parts, Body::from(body)));
        }
    };
    let stored = sqlx::query!(
        "update idempotency_keys
            set state = 'completed', response_status = $3, response_headers = $4, response_body = $5
          where principal = $1 and idempotency_key = $2",
        &principal,
        &key,
        i16::try_from(response_parts.status.as_u16()).unwrap_or(200),
        serde_json::Value::Object(headers),
        sealed
    )
    .execute(&state.db)
    .await;
    if let Err(e) = stored {
        // The work is done and committed; only the replay copy is lost. Say so, keep going.
        tracing::error!(error = %e, "storing an idempotent response failed");
        release(state, &principal, &key).await;
    }
    response_parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(response_parts, Body::from(body)))
}

/// A handler's note on its response: these top-level JSON fields are shown once and never
/// stored for a replay; each is replaced by the given text, or left out when `None`.
#[derive(Debug, Clone, Copy)]
pub struct StoreWithout(pub &'static [(&'static str, Option<&'static str>)]);

fn redact(body: &[u8], fields: &[(&'static str, Option<&'static str>)]) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(body) else {
        // Not the JSON the handler promised: keep nothing rather than the capability.
        return b"{}".to_vec();
    };
    for (field, replacement) in fields {
        match replacement {
            Some(text) => {
                object.insert((*field).to_owned(), serde_json::Value::from(*text));
            }
            None => {
                object.remove(*field);
            }
        }
    }
    serde_json::to_vec(&object).unwrap_or_default()
}

/// The key as stored, with whether it expired and whether its first request still holds it.
async fn stored_key(
    state: &AppState,
    principal: &str,
    key: &str,
) -> Result<Option<StoredKey>, sqlx::Error> {
    sqlx::query_as!(
        StoredKey,
        r#"select fingerprint, state, expires_at < now() as "expired!",
                locked_until > now() as "locked!",
                response_status, response_headers, response_body
           from idempotency_keys
          where principal = $1 and idempotency_key = $2"#,
        principal,
        key
    )
    .fetch_optional(&state.db)
    .await
}

async fn delete_expired(state: &AppState, principal: &str, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "delete from idempotency_keys
          where principal = $1 and idempotency_key = $2 and expires_at < now()",
        principal,
        key
    )
    .execute(&state.db)
    .await?;
    Ok(())
}

/// Take the key for this request, or learn what to answer instead.
async fn claim(
    state: &AppState,
    principal: &str,
    key: &str,
    fingerprint: &[u8],
) -> Result<Claim, AppError> {
    let settings = &state.settings.idempotency;
    let ttl_secs = (settings.ttl_hours * 3600) as f64;
    let in_flight_secs = settings.in_flight_timeout_secs as f64;
    for _ in 0..5 {
        let inserted = sqlx::query!(
            "insert into idempotency_keys
                 (principal, idempotency_key, fingerprint, state, locked_until, expires_at)
             values ($1, $2, $3, 'in_flight',
                     now() + make_interval(secs => $4), now() + make_interval(secs => $5))
             on conflict (principal, idempotency_key) do nothing",
            principal,
            key,
            fingerprint,
            in_flight_secs,
            ttl_secs
        )
        .execute(&state.db)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Claim::Owned);
        }
        let Some(StoredKey {
            fingerprint: stored_print,
            state: row_state,
            expired,
            locked,
            response_status: status,
            response_headers: headers,
            response_body: body,
        }) = stored_key(state, principal, key).await?
        else {
            continue; // released meanwhile: try again
        };
        if expired {
            delete_expired(state, principal, key).await?;
            continue;
        }
        if stored_print != fingerprint {
            return Err(AppError::client(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used for a different request",
            ));
        }
        if row_state == "completed" {
            let body = match body {
                Some(sealed) => Some(open(state, principal, key, &sealed).await?),
                None => None,
            };
            return Ok(Claim::Replay(replay(status, headers, body)));
        }
        if locked {
            return Err(AppError::client(
                StatusCode::CONFLICT,
                ErrorCode::IdempotencyKeyInFlight,
                "a request with this Idempotency-Key is still being processed",
            ));
        }
        // The first request died mid-way (its process was killed): take the key over.
        let taken = sqlx::query!(
            "update idempotency_keys set locked_until = now() + make_interval(secs => $3)
              where principal = $1 and idempotency_key = $2
                and state = 'in_flight' and locked_until <= now()",
            principal,
            key,
            in_flight_secs
        )
        .execute(&state.db)
        .await?;
        if taken.rows_affected() == 1 {
            return Ok(Claim::Owned);
        }
    }
    Err(AppError::client(
        StatusCode::CONFLICT,
        ErrorCode::IdempotencyKeyInFlight,
        "a request with this Idempotency-Key is still being processed",
    ))
}

fn response_aad(principal: &str, key: &str) -> Vec<u8> {
    format!("idempotent-response\0{principal}\0{key}").into_bytes()
}

async fn response_key(
    state: &AppState,
) -> Result<std::sync::Arc<crate::crypto::DataKey>, AppError> {
    state
        .keys
        .response_key(&state.db)
        .await
        .map_err(|e| AppError::DependencyUnavailable {
            dependency: "kms",
            source: e,
        })
}

async fn seal(
    state: &AppState,
    principal: &str,
    key: &str,
    body: &[u8],
) -> Result<Vec<u8>, AppError> {
    let sealing_key = response_key(state).await?;
    Ok(crate::crypto::aead_seal(
        &sealing_key,
        &response_aad(principal, key),
        body,
    ))
}

async fn open(
    state: &AppState,
    principal: &str,
    key: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, AppError> {
    let sealing_key = response_key(state).await?;
    crate::crypto::aead_open(&sealing_key, &response_aad(principal, key), sealed)
        .map(|plain| plain.to_vec())
        .map_err(|e| AppError::Internal(e.context("a stored idempotent response does not verify")))
}

fn replay(
    status: Option<i16>,
    headers: Option<serde_json::Value>,
    body: Option<Vec<u8>>,
) -> Response {
    let status = status
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = (status, Body::from(body.unwrap_or_default())).into_response();
    if let Some(serde_json::Value::Object(headers)) = headers {
        for (name, value) in headers {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::try_from(name.as_str()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

async fn release(state: &AppState, principal: &str, key: &str) {
    let result = sqlx::query!(
        "delete from idempotency_keys
          where principal = $1 and idempotency_key = $2 and state = 'in_flight'",
        principal,
        key
    )
    .execute(&state.db)
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "releasing an idempotency key failed; it frees itself when its lock expires");
    }
}
