//! A loan's status: a value the loans aggregate moves through its machine (`loans::may_move`)
//! and the events about a loan carry.

use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum LoanStatus {
    Draft,
    Submitted,
    Underwriting,
    Closed,
    Denied,
    Withdrawn,
}

impl LoanStatus {
    pub const ALL: [LoanStatus; 6] = [
        LoanStatus::Draft,
        LoanStatus::Submitted,
        LoanStatus::Underwriting,
        LoanStatus::Closed,
        LoanStatus::Denied,
        LoanStatus::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LoanStatus::Draft => "draft",
            LoanStatus::Submitted => "submitted",
            LoanStatus::Underwriting => "underwriting",
            LoanStatus::Closed => "closed",
            LoanStatus::Denied => "denied",
            LoanStatus::Withdrawn => "withdrawn",
        }
    }

    /// Whether the machine ever allows `self → to`, whoever asks.
    pub fn can_move_to(self, to: LoanStatus) -> bool {
        use LoanStatus::*;
        matches!(
            (self, to),
            (Draft, Submitted)
                | (Draft, Withdrawn)
                | (Submitted, Underwriting)
                | (Submitted, Withdrawn)
                | (Underwriting, Closed)
                | (Underwriting, Denied)
                | (Underwriting, Withdrawn)
        )
    }
}
