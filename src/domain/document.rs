//! Document metadata rules: allowed types, and filenames made safe to store and to serve.

use serde::{Deserialize, Serialize};

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

/// The declared types accepted up front; the pipeline checks the real type by magic bytes.
pub const ALLOWED_CONTENT_TYPES: [&str; 6] = [
    "application/pdf",
    "image/jpeg",
    "image/png",
    "image/tiff",
    "image/heic",
    "image/heif",
];

/// A filename safe to keep and to put in a Content-Disposition: path separators, control
/// characters and bidirectional overrides removed, whitespace trimmed, at most 200
/// characters; never empty.
pub fn sanitize_filename(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .filter(|c| {
            !c.is_control()
                && !matches!(c, '/' | '\\')
                && !matches!(*c as u32, 0x202A..=0x202E | 0x2066..=0x2069 | 0x200E | 0x200F | 0x061C)
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    let limited: String = trimmed.chars().take(200).collect();
    if limited.is_empty() {
        "document".into()
    } else {
        limited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_filenames_are_defused() {
        assert_eq!(sanitize_filename("../x.pdf"), "x.pdf");
        assert_eq!(sanitize_filename("a\0b\r\nc.pdf"), "abc.pdf");
        assert_eq!(
            sanitize_filename("invoice\u{202E}fdp.exe"),
            "invoicefdp.exe"
        );
        assert_eq!(sanitize_filename(&"x".repeat(300)).chars().count(), 200);
        assert_eq!(sanitize_filename("/../"), "document");
        assert_eq!(sanitize_filename("résumé 2024.pdf"), "résumé 2024.pdf");
    }
}
