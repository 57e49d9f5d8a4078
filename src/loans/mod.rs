//! Loan applications and their status machine (docs/api.md):
//!
//! ```text
//! draft ──► submitted ──► underwriting ──► closed
//!   │           │               └────────► denied
//!   └───────────┴───────────────┴────────► withdrawn
//! ```

pub mod http;
pub mod milestones;
pub mod ops;
pub mod pipeline;
pub mod store;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::domain::LoanStatus;
use crate::domain::money::MoneyInput;
use crate::leads::Address;

/// Who owns a loan: whom its PII is masked for.
pub struct LoanOwner {
    pub owner_subject: String,
    pub team: Option<String>,
}

/// A loan the LOS is working on, with the LOS's id for it.
pub struct AtLos {
    pub id: Uuid,
    pub los_loan_id: String,
}

/// A loan's status and the LOS's id for it.
pub struct StatusAndLosId {
    pub status: LoanStatus,
    pub los_loan_id: Option<String>,
}

/// Who asks for a transition (the role × action matrix of docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mover {
    /// An agent on their own loan.
    Agent,
    /// A manager on a loan of their team (manual override where the LOS normally decides).
    Manager,
    /// The LOS, through its signed webhook.
    Los,
}

pub fn may_move(mover: Mover, from: LoanStatus, to: LoanStatus) -> bool {
    use LoanStatus::*;
    match (from, to) {
        (Draft, Submitted) | (Draft, Withdrawn) => matches!(mover, Mover::Agent | Mover::Manager),
        (Submitted, Underwriting) | (Underwriting, Closed) | (Underwriting, Denied) => {
            matches!(mover, Mover::Manager | Mover::Los)
        }
        (Submitted, Withdrawn) | (Underwriting, Withdrawn) => true,
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoanType {
    Conventional,
    Fha,
    Va,
    Usda,
    Jumbo,
}

impl LoanType {
    pub fn as_str(self) -> &'static str {
        match self {
            LoanType::Conventional => "conventional",
            LoanType::Fha => "fha",
            LoanType::Va => "va",
            LoanType::Usda => "usda",
            LoanType::Jumbo => "jumbo",
        }
    }
}

// `POST /v1/loans`: a loan application for a lead.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLoan {
    pub lead_id: Uuid,
    pub loan_type: LoanType,
    /// Decimal string (or number), two places at most.
    #[schema(value_type = String)]
    pub amount: MoneyInput,
    pub property: Address,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NeedsAttention {
    pub reason: String,
    pub since: String,
}

// A loan as the caller may see it (the property's first line masked for masked-only roles).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Loan {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub loan_type: String,
    /// Decimal string with two places.
    pub amount: String,
    pub property: Address,
    pub status: LoanStatus,
    pub version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_attention: Option<NeedsAttention>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub los_loan_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub los_milestone: Option<String>,
    pub owner: String,
    pub team: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoanList {
    pub items: Vec<Loan>,
    pub next_cursor: Option<String>,
    /// Every status with its count, from the same snapshot as `items`.
    pub status_counts: BTreeMap<String, i64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    pub status: LoanStatus,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryList {
    pub items: Vec<HistoryItem>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryItem {
    pub from: String,
    pub to: String,
    pub actor: String,
    pub reason: Option<String>,
    pub at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_allows_exactly_seven_moves() {
        let allowed: Vec<_> = LoanStatus::ALL
            .iter()
            .flat_map(|f| LoanStatus::ALL.iter().map(move |t| (*f, *t)))
            .filter(|(f, t)| f.can_move_to(*t))
            .collect();
        assert_eq!(allowed.len(), 7);
        for terminal in [
            LoanStatus::Closed,
            LoanStatus::Denied,
            LoanStatus::Withdrawn,
        ] {
            assert!(LoanStatus::ALL.iter().all(|t| !terminal.can_move_to(*t)));
        }
    }

    #[test]
    fn who_may_move_follows_the_matrix() {
        use LoanStatus::*;
        assert!(may_move(Mover::Agent, Draft, Submitted));
        assert!(!may_move(Mover::Los, Draft, Submitted));
        assert!(!may_move(Mover::Agent, Submitted, Underwriting));
        assert!(may_move(Mover::Manager, Submitted, Underwriting));
        assert!(may_move(Mover::Los, Underwriting, Closed));
        assert!(!may_move(Mover::Agent, Underwriting, Denied));
        assert!(may_move(Mover::Agent, Underwriting, Withdrawn));
        // Never allowed by the machine means never allowed to anyone.
        for mover in [Mover::Agent, Mover::Manager, Mover::Los] {
            for from in LoanStatus::ALL {
                for to in LoanStatus::ALL {
                    if may_move(mover, from, to) {
                        assert!(from.can_move_to(to), "{mover:?} {from:?}->{to:?}");
                    }
                }
            }
        }
    }
}
