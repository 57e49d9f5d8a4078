//! The needs list: document requests on a loan, their timeline, and the agent's review.

pub mod http;
pub mod ops;
pub mod store;

use serde::Serialize;
use uuid::Uuid;

use crate::error::{AppError, FieldError};
use store::RequestRow;

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
            state: row.state.clone(),
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
