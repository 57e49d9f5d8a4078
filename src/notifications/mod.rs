//! What borrowers and agents are told: the notifier (email and SMS from queue events), the
//! document reminders, unsubscribe and SMS consent (the mailer and its templates: `crate::mail`).

pub mod http;
pub mod ops;
mod recipients;
pub mod reminders;
pub mod store;
pub mod worker;

use serde::Serialize;
use uuid::Uuid;

// A notification's delivery: recorded `queued` before the send, then `sent` or `failed`
// (a plain comment: the API shows the text, `as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum NotificationState {
    Queued,
    Sent,
    Failed,
}

impl NotificationState {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationState::Queued => "queued",
            NotificationState::Sent => "sent",
            NotificationState::Failed => "failed",
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Notification {
    pub id: Uuid,
    pub channel: String,
    pub template: String,
    pub recipient_kind: String,
    /// Masked: `c***@example.org`.
    pub recipient: String,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationList {
    pub items: Vec<Notification>,
    pub next_cursor: Option<String>,
}

/// `c***@example.org` / `***0187`: enough to recognise, not enough to harvest.
pub fn mask(address: &str) -> String {
    crate::domain::mask::address(address)
}

#[cfg(test)]
mod tests {
    #[test]
    fn masking() {
        assert_eq!(
            super::mask("casey.borrower@example.org"),
            "c***@example.org"
        );
        assert_eq!(super::mask("+12025550187"), "***0187");
    }
}
