//! One error type for every handler, rendered as RFC 9457 `application/problem+json` with a
//! stable machine `code` (docs/api.md). 5xx bodies say nothing specific: the cause chain
//! goes to the log, under the request's span (and so its request id).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every problem `code` the service answers with (docs/api.md, "Errors"): clients and tests
/// rely on these strings, so they are written once, here.
macro_rules! error_codes {
    ($($variant:ident => $code:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    MalformedJson => "malformed_json",
    IdempotencyKeyRequired => "idempotency_key_required",
    MalformedRequest => "malformed_request",
    InvalidRequest => "invalid_request",
    BadRequest => "bad_request",
    MissingCredentials => "missing_credentials",
    MalformedToken => "malformed_token",
    InvalidSignature => "invalid_signature",
    UnsupportedAlgorithm => "unsupported_algorithm",
    UnknownKey => "unknown_key",
    TokenExpired => "token_expired",
    InvalidIssuer => "invalid_issuer",
    InvalidAudience => "invalid_audience",
    WrongTokenType => "wrong_token_type",
    SessionExpired => "session_expired",
    StepUpRequired => "step_up_required",
    StaleTimestamp => "stale_timestamp",
    Forbidden => "forbidden",
    MfaRequired => "mfa_required",
    CsrfFailed => "csrf_failed",
    AccountDisabled => "account_disabled",
    NotFound => "not_found",
    LinkNotFound => "link_not_found",
    MethodNotAllowed => "method_not_allowed",
    NotAcceptable => "not_acceptable",
    UnsupportedMediaType => "unsupported_media_type",
    RequestTimeout => "request_timeout",
    InvalidTransition => "invalid_transition",
    InvalidState => "invalid_state",
    IdempotencyKeyInFlight => "idempotency_key_in_flight",
    Conflict => "conflict",
    LinkExpired => "link_expired",
    LinkRevoked => "link_revoked",
    LinkExhausted => "link_exhausted",
    PreconditionFailed => "precondition_failed",
    PreconditionRequired => "precondition_required",
    PayloadTooLarge => "payload_too_large",
    ValidationFailed => "validation_failed",
    IdempotencyKeyReused => "idempotency_key_reused",
    FileTooLarge => "file_too_large",
    UnsupportedFileType => "unsupported_file_type",
    ConsentRequired => "consent_required",
    SubjectIncomplete => "subject_incomplete",
    RateLimited => "rate_limited",
    DependencyUnavailable => "dependency_unavailable",
    InternalError => "internal_error",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// The problem document. `request_id` is filled in by the request-id middleware, which
/// knows it; handlers never have to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// With `step_up_required`: where a browser signs in again (`/auth/reauth`), coming back
    /// to the page that asked. RFC 9470's `WWW-Authenticate` challenge carries no URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reauth_url: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            // A URN: stable, and promises no documentation URL the installation may not reach.
            type_uri: format!("urn:loanfolio:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.as_str().to_owned(),
            request_id: None,
            errors: Vec::new(),
            reauth_url: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// Carried in response extensions so the request-id middleware can stamp the id into the
/// body after the handler ran.
#[derive(Debug, Clone)]
pub struct ProblemMarker(pub Problem);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(&self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response.extensions_mut().insert(ProblemMarker(self));
        response
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{detail}")]
    Client {
        status: StatusCode,
        code: ErrorCode,
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("dependency unavailable: {dependency}")]
    DependencyUnavailable {
        dependency: &'static str,
        #[source]
        source: anyhow::Error,
    },
    #[error(transparent)]
    Auth(AuthError),
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn client(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::Client {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn not_found() -> Self {
        Self::client(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "the resource does not exist",
        )
    }

    pub fn forbidden() -> Self {
        Self::client(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "your role does not allow this",
        )
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self::Client {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: ErrorCode::ValidationFailed,
            detail: "the request is not valid".into(),
            errors,
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Self::DependencyUnavailable {
                    dependency: "postgres",
                    source: error.into(),
                }
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::Client {
                status,
                code,
                detail,
                errors,
            } => {
                let mut problem = Problem::new(status, code, detail);
                problem.errors = errors;
                problem.into_response()
            }
            AppError::DependencyUnavailable { dependency, source } => {
                tracing::warn!(dependency, error = %format!("{source:#}"), "dependency unavailable");
                let mut response = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::DependencyUnavailable,
                    "a service this request needs is unavailable; try again shortly",
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                response
            }
            AppError::Auth(error) => error.into_response_with_problem(),
            AppError::RateLimited { retry_after_secs } => {
                let mut response = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RateLimited,
                    "too many requests; slow down",
                )
                .into_response();
                if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                response
            }
            AppError::Internal(source) => {
                tracing::error!(error = %format!("{source:#}"), "internal error");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::InternalError,
                    "the server could not complete the request",
                )
                .into_response()
            }
        }
    }
}

/// `Json` whose rejections are problem documents, not axum's plain-text bodies.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct AppJson<T>(pub T);

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => Self::Client {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: ErrorCode::ValidationFailed,
                detail: "the request body does not match the expected shape".into(),
                errors: vec![field_error_from_serde(&e.body_text())],
            },
            JsonRejection::JsonSyntaxError(_) => Self::client(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedJson,
                "the request body is not valid JSON",
            ),
            JsonRejection::MissingJsonContentType(_) => Self::client(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "send the body as application/json",
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::client(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::PayloadTooLarge,
                    "the request body is too large",
                )
            }
            other => Self::client(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedJson,
                format!("the request body could not be read ({})", other.status()),
            ),
        }
    }
}

/// serde's messages can quote the offending value (`invalid type: string "123-45-6789"`),
/// which may be PII: keep the field path and what was expected, drop the value.
fn field_error_from_serde(text: &str) -> FieldError {
    let field = json_error_path(text);
    let rest = text
        .split_once("target type: ")
        .map(|(_, r)| r)
        .unwrap_or(text);
    let rest = if field.is_empty() {
        rest
    } else {
        rest.split_once(": ").map(|(_, m)| m).unwrap_or(rest)
    };
    let rest = rest.split(" at line ").next().unwrap_or(rest);
    let message = if rest.starts_with("invalid type")
        || rest.starts_with("invalid value")
        || rest.starts_with("invalid length")
        || rest.starts_with("unknown variant")
    {
        // `unknown variant `123-45-6789`, expected one of …` quotes what the client sent in
        // an enumeration field: keep only what was expected.
        match rest.split_once(", expected ") {
            Some((_, expected)) => format!("invalid value, expected {expected}"),
            None => "invalid value".to_owned(),
        }
    } else {
        // missing field `x`, unknown field `x`: these quote field names from the schema or
        // the body's keys, never its values.
        rest.to_owned()
    };
    FieldError { field, message }
}

/// serde_path_to_error style prefix (`field.sub: message`) → the field path, if any.
fn json_error_path(text: &str) -> String {
    // axum formats data errors as "Failed to deserialize the JSON body into the target
    // type: <path>: <serde message>"; the path is absent for top-level errors.
    let rest = text
        .split_once("target type: ")
        .map(|(_, r)| r)
        .unwrap_or(text);
    match rest.split_once(": ") {
        Some((path, _)) if !path.contains(' ') => path.to_owned(),
        _ => String::new(),
    }
}

/// Why a request was not authenticated; each has its own code (docs/api.md).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials were presented")]
    MissingCredentials,
    #[error("the token is not a well-formed JWT")]
    MalformedToken,
    #[error("the token's signature does not verify")]
    InvalidSignature,
    #[error("the token's signing algorithm is not accepted")]
    UnsupportedAlgorithm,
    #[error("the token was signed with a key the issuer does not publish")]
    UnknownKey,
    #[error("the token has expired or is not valid yet")]
    TokenExpired,
    #[error("the token was issued by another issuer")]
    InvalidIssuer,
    #[error("the token is not meant for this API")]
    InvalidAudience,
    #[error("the token is not an access token")]
    WrongTokenType,
    #[error("the session has expired; sign in again")]
    SessionExpired,
    #[error("this operation needs a recent sign-in")]
    StepUpRequired { max_age_secs: u64 },
    #[error("multi-factor authentication is required")]
    MfaRequired,
    #[error("cookie-authenticated changes need the session's CSRF token")]
    CsrfFailed,
    #[error("this account is disabled")]
    AccountDisabled,
    #[error("the issuer's keys cannot be fetched")]
    IssuerUnavailable(#[source] anyhow::Error),
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::MissingCredentials => ErrorCode::MissingCredentials,
            AuthError::MalformedToken => ErrorCode::MalformedToken,
            AuthError::InvalidSignature => ErrorCode::InvalidSignature,
            AuthError::UnsupportedAlgorithm => ErrorCode::UnsupportedAlgorithm,
            AuthError::UnknownKey => ErrorCode::UnknownKey,
            AuthError::TokenExpired => ErrorCode::TokenExpired,
            AuthError::InvalidIssuer => ErrorCode::InvalidIssuer,
            AuthError::InvalidAudience => ErrorCode::InvalidAudience,
            AuthError::WrongTokenType => ErrorCode::WrongTokenType,
            AuthError::SessionExpired => ErrorCode::SessionExpired,
            AuthError::StepUpRequired { .. } => ErrorCode::StepUpRequired,
            AuthError::MfaRequired => ErrorCode::MfaRequired,
            AuthError::CsrfFailed => ErrorCode::CsrfFailed,
            AuthError::AccountDisabled => ErrorCode::AccountDisabled,
            AuthError::IssuerUnavailable(_) => ErrorCode::DependencyUnavailable,
        }
    }
}

impl From<AuthError> for AppError {
    fn from(error: AuthError) -> Self {
        AppError::Auth(error)
    }
}

impl AuthError {
    pub fn into_response_with_problem(self) -> Response {
        let (status, challenge) = match &self {
            AuthError::MfaRequired | AuthError::CsrfFailed | AuthError::AccountDisabled => {
                (StatusCode::FORBIDDEN, None)
            }
            AuthError::IssuerUnavailable(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot fetch the issuer's keys");
                (StatusCode::SERVICE_UNAVAILABLE, None)
            }
            AuthError::MissingCredentials => (StatusCode::UNAUTHORIZED, Some("Bearer".to_owned())),
            AuthError::StepUpRequired { max_age_secs } => (
                StatusCode::UNAUTHORIZED,
                Some(format!(
                    r#"Bearer error="insufficient_user_authentication", error_description="A more recent authentication is required", max_age={max_age_secs}"#
                )),
            ),
            other => (
                StatusCode::UNAUTHORIZED,
                Some(format!(
                    r#"Bearer error="invalid_token", error_description="{other}""#
                )),
            ),
        };
        let mut response = Problem::new(status, self.code(), self.to_string()).into_response();
        if let Some(challenge) = challenge
            && let Ok(value) = HeaderValue::from_str(&challenge)
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// The key service failed: 503 with `kms` named (never a 500).
pub fn kms_unavailable(e: anyhow::Error) -> AppError {
    AppError::DependencyUnavailable {
        dependency: "kms",
        source: e,
    }
}

pub fn malformed(detail: &str) -> AppError {
    AppError::client(
        StatusCode::BAD_REQUEST,
        ErrorCode::MalformedRequest,
        detail.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract lists every code the service answers with, and nothing else.
    #[test]
    fn every_error_code_is_in_the_contract_and_no_other() {
        let api = include_str!("../docs/api.md");
        let table: String = api
            .lines()
            .skip_while(|l| !l.starts_with("| status | codes |"))
            .take_while(|l| l.starts_with('|'))
            .collect::<Vec<_>>()
            .join("\n");
        let documented: std::collections::BTreeSet<&str> = table
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|s| s.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            // A field of the problem document the table mentions, not a code.
            .filter(|s| *s != "reauth_url")
            .collect();
        let ours: std::collections::BTreeSet<&str> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(documented, ours, "docs/api.md's error table vs ErrorCode");
    }

    #[test]
    fn json_error_path_extracts_field() {
        assert_eq!(
            json_error_path(
                "Failed to deserialize the JSON body into the target type: address.city: invalid type: integer `1`, expected a string at line 1 column 30"
            ),
            "address.city"
        );
        assert_eq!(
            json_error_path(
                "Failed to deserialize the JSON body into the target type: missing field `name` at line 1 column 2"
            ),
            ""
        );
    }

    #[test]
    fn serde_values_never_echoed() {
        let e = field_error_from_serde(
            "Failed to deserialize the JSON body into the target type: ssn: invalid type: string \"123-45-6789\", expected u32 at line 1 column 20",
        );
        assert_eq!(e.field, "ssn");
        assert_eq!(e.message, "invalid value, expected u32");
        let e = field_error_from_serde(
            "Failed to deserialize the JSON body into the target type: unknown field `nmae`, expected `name` at line 1 column 7",
        );
        assert_eq!(e.field, "");
        assert_eq!(e.message, "unknown field `nmae`, expected `name`");
        let e = field_error_from_serde(
            "Failed to deserialize the JSON body into the target type: loan_purpose: unknown variant `123-45-6789`, expected one of `purchase`, `refinance` at line 1 column 40",
        );
        assert_eq!(e.field, "loan_purpose");
        assert_eq!(
            e.message,
            "invalid value, expected one of `purchase`, `refinance`"
        );
    }

    #[test]
    fn problem_type_is_stable_per_code() {
        let p = Problem::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "x");
        assert_eq!(p.type_uri, "urn:loanfolio:problem:not_found");
        assert_eq!(p.title, "Not Found");
    }
}
