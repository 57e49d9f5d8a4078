//! Helpers shared by the resource modules: ETags and If-Match, scoping, problem shortcuts.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use sqlx::{Postgres, QueryBuilder};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::ReadScope;
use crate::error::AppError;

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

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

pub fn kms_unavailable(e: anyhow::Error) -> AppError {
    AppError::DependencyUnavailable {
        dependency: "kms",
        source: e,
    }
}

pub fn malformed(detail: &str) -> AppError {
    AppError::client(
        StatusCode::BAD_REQUEST,
        "malformed_request",
        detail.to_owned(),
    )
}

pub fn if_match(headers: &HeaderMap) -> Result<i64, AppError> {
    let value = headers.get(header::IF_MATCH).ok_or_else(|| {
        AppError::client(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
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
                "precondition_failed",
                "the If-Match value does not match the resource's ETag",
            )
        })
}

/// Append the caller's read scope to a query over a table aliased `alias` with
/// `owner_subject` and `team` columns.
pub fn push_scope(query: &mut QueryBuilder<Postgres>, alias: &str, scope: &ReadScope) {
    match scope {
        ReadScope::Own(subject) => {
            query
                .push(format!(" and {alias}.owner_subject = "))
                .push_bind(subject.clone());
        }
        ReadScope::Team(team) => {
            query
                .push(format!(" and {alias}.team = "))
                .push_bind(team.clone());
        }
        ReadScope::All => {}
    }
}

/// The lead (borrower file) of a loan the caller can see; someone else's loan is 404.
pub async fn visible_loan(
    conn: &mut sqlx::PgConnection,
    loan: uuid::Uuid,
    actor: &crate::auth::Actor,
) -> Result<uuid::Uuid, AppError> {
    loan_lead(conn, loan, &actor.read_scope())
        .await?
        .ok_or_else(AppError::not_found)
}

/// As [`visible_loan`], and the caller may change it: visible but not writable is 403.
pub async fn writable_loan(
    conn: &mut sqlx::PgConnection,
    loan: uuid::Uuid,
    actor: &crate::auth::Actor,
) -> Result<uuid::Uuid, AppError> {
    let lead = visible_loan(conn, loan, actor).await?;
    let write_scope = actor.write_scope()?;
    loan_lead(conn, loan, &write_scope)
        .await?
        .ok_or_else(AppError::forbidden)?;
    Ok(lead)
}

async fn loan_lead(
    conn: &mut sqlx::PgConnection,
    loan: uuid::Uuid,
    scope: &ReadScope,
) -> Result<Option<uuid::Uuid>, sqlx::Error> {
    let mut query = QueryBuilder::<Postgres>::new("select o.lead_id from loans o where o.id = ");
    query.push_bind(loan);
    push_scope(&mut query, "o", scope);
    query.build_query_scalar().fetch_optional(conn).await
}

/// Keyset pagination: the query fetched `limit + 1` rows; keep `limit` and say where the
/// next page starts (`None` on the last page).
pub fn next_page<T>(
    rows: &mut Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
) -> Option<String> {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(cursor_of)
    } else {
        None
    }
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

/// A validated page request: how many, and after which item.
pub struct Page<C> {
    pub limit: i64,
    pub after: Option<C>,
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
