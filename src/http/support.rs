//! Helpers shared by the resource modules: ETags and If-Match, scoping, problem shortcuts.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

pub use crate::db::{Page, next_page};
pub use crate::domain::rfc3339;
pub use crate::error::{AppError, ErrorCode, kms_unavailable, malformed};

/// `status` with `body` as JSON and a `Location` header pointing at `location` (ids only,
/// always a valid header value).
pub fn with_location<T: serde::Serialize>(
    status: StatusCode,
    body: T,
    location: &str,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = (status, crate::error::AppJson(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

pub fn if_match(headers: &HeaderMap) -> Result<i64, AppError> {
    let value = headers.get(header::IF_MATCH).ok_or_else(|| {
        AppError::client(
            StatusCode::PRECONDITION_REQUIRED,
            ErrorCode::PreconditionRequired,
            "send If-Match with the ETag you last read",
        )
    })?;
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            AppError::client(
                StatusCode::PRECONDITION_FAILED,
                ErrorCode::PreconditionFailed,
                "the If-Match value does not match the resource's ETag",
            )
        })
}

/// `limit` and `cursor` of every list route (docs/api.md, "Lists").
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1–200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    /// From the extractor's result: a bad query is 400 `malformed_request`.
    pub fn from_query(
        query: Result<axum::extract::Query<PageParams>, axum::extract::rejection::QueryRejection>,
    ) -> Result<Self, AppError> {
        query
            .map(|axum::extract::Query(p)| p)
            .map_err(|_| malformed("`limit` and `cursor` are not valid"))
    }

    /// The page, with a cursor that parses as `C` (ids are UUIDs, sequence numbers i64).
    pub fn page<C: std::str::FromStr>(&self) -> Result<Page<C>, AppError> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(malformed("`limit` must be between 1 and 200"));
        }
        let after = match &self.cursor {
            Some(cursor) => Some(
                cursor
                    .parse::<C>()
                    .map_err(|_| malformed("`cursor` is not valid"))?,
            ),
            None => None,
        };
        Ok(Page { limit, after })
    }
}
