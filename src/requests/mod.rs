//! The needs list: document requests on a loan, their timeline, and the agent's review.

pub mod http;
pub mod ops;
pub mod store;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{AppError, FieldError};
use store::RequestRow;

/// Where a request stands (docs/api.md "Doc request"): `outstanding` → `received` (a file
/// for it became available) → `accepted` | `rejected` (the borrower uploads a replacement,
/// which makes it `received` again); `outstanding` | `rejected` → `not_applicable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RequestState {
    Outstanding,
    Received,
    Accepted,
    Rejected,
    NotApplicable,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Outstanding => "outstanding",
            RequestState::Received => "received",
            RequestState::Accepted => "accepted",
            RequestState::Rejected => "rejected",
            RequestState::NotApplicable => "not_applicable",
        }
    }

    /// Still waiting on the borrower: a file (or a "not applicable") can answer it.
    pub fn awaits_borrower(self) -> bool {
        matches!(self, RequestState::Outstanding | RequestState::Rejected)
    }
}

// A request as the borrower's page shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublicRequest {
    pub id: Uuid,
    pub doc_type: String,
    pub note: String,
    pub due_date: Option<String>,
    pub state: String,
    pub reason: Option<String>,
}

impl PublicRequest {
    pub fn from_row(key: &[u8; 32], row: &RequestRow) -> Result<Self, AppError> {
        let plain = ops::decrypt_request(key, row)?;
        Ok(PublicRequest {
            id: row.id,
            doc_type: row.doc_type.clone(),
            note: plain.note,
            due_date: row.due_date.map(|d| d.to_string()),
            state: row.state.as_str().to_owned(),
            reason: plain.reason,
        })
    }
}

/// The longest free text on a request: an agent's note or reason, a borrower's comment.
pub const MAX_TEXT: usize = 1000;

/// Field errors for free text: `required` and not blank, at most [`MAX_TEXT`] characters.
pub fn check_text(field: &str, text: &str, required: bool, errors: &mut Vec<FieldError>) {
    if required && text.trim().is_empty() {
        errors.push(FieldError {
            field: field.into(),
            message: "is required".into(),
        });
    }
    if text.chars().count() > MAX_TEXT {
        errors.push(FieldError {
            field: field.into(),
            message: format!("must be at most {MAX_TEXT} characters"),
        });
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TimelineItem {
    pub at: String,
    pub event: String,
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentRequest {
    pub id: Uuid,
    pub loan_id: Uuid,
    pub doc_type: String,
    /// Absent for callers who see masked PII only.
    pub note: Option<String>,
    pub due_date: Option<String>,
    pub state: String,
    /// The agent's rejection reason, or the borrower's not-applicable comment.
    pub reason: Option<String>,
    pub timeline: Vec<TimelineItem>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentRequestList {
    pub items: Vec<DocumentRequest>,
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::RequestState::{self, *};

    #[test]
    fn states_are_stored_and_shown_by_one_name_and_only_two_await_the_borrower() {
        for state in [Outstanding, Received, Accepted, Rejected, NotApplicable] {
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, state.as_str(), "{state:?}");
            assert_eq!(serde_json::from_value::<RequestState>(json).unwrap(), state);
            assert_eq!(
                state.awaits_borrower(),
                matches!(state, Outstanding | Rejected),
                "{state:?}"
            );
        }
    }
}
