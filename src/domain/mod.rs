//! Value types shared by several aggregates: validated inputs that can only hold valid values.

mod document_state;
mod loan_status;
pub mod mask;
pub mod money;
pub mod ssn;

pub use document_state::DocumentState;
pub use loan_status::LoanStatus;
use serde::{Deserialize, Serialize};

// The kinds of document a borrower is asked for and an upload is filed under (a plain
// comment: a doc comment would become its schema description in /openapi.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocType {
    BankStatement,
    TaxReturn,
    W2,
    PayStub,
    PhotoId,
    GiftLetter,
    Other,
}

impl DocType {
    pub const ALL: [DocType; 7] = [
        DocType::BankStatement,
        DocType::TaxReturn,
        DocType::W2,
        DocType::PayStub,
        DocType::PhotoId,
        DocType::GiftLetter,
        DocType::Other,
    ];

    pub fn parse(name: &str) -> Option<DocType> {
        Self::ALL.into_iter().find(|d| d.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DocType::BankStatement => "bank_statement",
            DocType::TaxReturn => "tax_return",
            DocType::W2 => "w2",
            DocType::PayStub => "pay_stub",
            DocType::PhotoId => "photo_id",
            DocType::GiftLetter => "gift_letter",
            DocType::Other => "other",
        }
    }
}

// The languages a borrower's page and emails exist in (a plain comment: see DocType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    En,
    Es,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Es => "es",
        }
    }

    pub fn parse(code: &str) -> Option<Language> {
        match code {
            "en" => Some(Language::En),
            "es" => Some(Language::Es),
            _ => None,
        }
    }
}

/// A timestamp as the API writes it (RFC 3339).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
