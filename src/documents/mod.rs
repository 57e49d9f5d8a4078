//! Document metadata rules: allowed types, and filenames made safe to store and to serve.

pub mod http;
pub mod lifecycle;
pub mod ops;
pub mod reconciler;
pub mod store;
pub mod worker;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto::field::{self, Location};
use crate::error::AppError;

pub use crate::domain::DocType;

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
    // Leading dots and spaces together (" . .x" must not become ".x", a hidden file when
    // saved); found by the `filename` fuzz target.
    let trimmed = cleaned
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end();
    let limited: String = trimmed.chars().take(200).collect();
    if limited.is_empty() {
        "document".into()
    } else {
        limited
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUpload {
    pub filename: String,
    pub content_type: String,
    pub size_bytes: u64,
    /// Required for agents; a borrower's upload takes its request's type, else `other`.
    pub doc_type: Option<DocType>,
    /// The needs-list request this file answers.
    pub document_request_id: Option<Uuid>,
    /// Hex SHA-256 the client computed, if any (checked by the pipeline).
    pub sha256: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Document {
    pub id: Uuid,
    pub loan_id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub doc_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_request_id: Option<Uuid>,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewView>,
    pub uploaded_by: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewView {
    pub decision: String,
    pub reason: Option<String>,
    pub by: String,
    pub at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PutTarget {
    pub url: String,
    pub method: &'static str,
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub expires_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Upload {
    pub document: Document,
    pub upload: PutTarget,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentList {
    pub items: Vec<Document>,
    pub next_cursor: Option<String>,
}

pub fn filename_at(id: Uuid) -> Location<'static> {
    Location {
        table: "documents",
        column: "filename_enc",
        row: id,
    }
}

/// An agent's review reason in the clear.
pub fn review_reason(
    key: &[u8; 32],
    document: Uuid,
    sealed: Option<&[u8]>,
) -> Result<Option<String>, AppError> {
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let at = Location {
        table: "documents",
        column: "review_reason_enc",
        row: document,
    };
    let plain = field::decrypt(key, at, sealed)
        .map_err(|e| anyhow::anyhow!("decrypting a review reason: {e}"))?;
    Ok(Some(String::from_utf8_lossy(&plain).into_owned()))
}

/// The longest a borrower's pre-signed PUT lives (`documents.upload_url_ttl_secs` may be
/// shorter); an object written after its link's revocation is rejected `link_revoked`.
pub const BORROWER_UPLOAD_URL_TTL: Duration = Duration::from_secs(300);

/// The opaque quarantine object key of a document: ids only, never a name.
pub fn quarantine_key(document: Uuid) -> String {
    format!("uploads/{document}")
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Accept,
    Reject,
}

pub fn review_reason_at(document: Uuid) -> Location<'static> {
    Location {
        table: "documents",
        column: "review_reason_enc",
        row: document,
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
        assert_eq!(sanitize_filename("    \0  ../  ../  x.  p\0df"), "x.  pdf");
        assert_eq!(sanitize_filename(" . .hidden"), "hidden");
    }
}

/// RFC 6266 / RFC 8187: `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<pct>`.
/// The name is sanitized first, so separators, controls and bidi overrides never appear.
pub fn content_disposition(filename: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    // attr-char (RFC 8187): ALPHA / DIGIT / "!" / "#" / "$" / "&" / "+" / "-" / "." / "^" /
    // "_" / "`" / "|" / "~"; everything else is percent-encoded.
    const ATTR: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'#')
        .remove(b'$')
        .remove(b'&')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'^')
        .remove(b'_')
        .remove(b'`')
        .remove(b'|')
        .remove(b'~');
    let name = sanitize_filename(filename);
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' && c != '%' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(&name, ATTR)
    )
}

#[cfg(test)]
mod disposition_tests {
    use super::*;

    #[test]
    fn exact_disposition_for_hostile_names() {
        assert_eq!(
            content_disposition("résumé \"final\".pdf"),
            "attachment; filename=\"r_sum_ _final_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.pdf"
        );
        assert_eq!(
            content_disposition("../x.pdf"),
            "attachment; filename=\"x.pdf\"; filename*=UTF-8''x.pdf"
        );
        assert_eq!(
            content_disposition("a\r\nb\u{202E}fdp.exe"),
            "attachment; filename=\"abfdp.exe\"; filename*=UTF-8''abfdp.exe"
        );
    }
}
