//! Upload links: the borrower's scoped, revocable capability to send files for one loan.

pub mod http;
pub mod ops;
pub mod store;

/// The link's rules as SQL literals, for other aggregates' compile-checked statements.
pub(crate) use store::link_rules_sql;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::crypto::field::Location;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLink {
    pub borrower_email: Option<String>,
    /// 1–720, default 168 (7 days).
    pub expires_in_hours: Option<u32>,
    /// 1–100, default 20. Counts files not rejected.
    pub max_files: Option<u32>,
    /// The borrower's page and emails for this link: `en` or `es` (absent: the browser's
    /// language, else English). The borrower can switch on the page.
    #[serde(default)]
    pub language: Option<crate::domain::Language>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UploadLink {
    pub id: Uuid,
    pub loan_id: Uuid,
    pub url: String,
    /// Only in the creation response: it is never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub expires_at: String,
    pub max_files: i32,
    pub files_accepted: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub borrower_email: Option<String>,
    pub revoked_at: Option<String>,
    /// The link's language, when one was chosen at creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<crate::domain::Language>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkList {
    pub items: Vec<UploadLink>,
    pub next_cursor: Option<String>,
}

/// What a link's `url` reads after its creation response: the token is shown once.
pub const NOT_SHOWN_AGAIN: &str = "(shown once, at creation)";

/// What a link can do now. One rule, in one order: a revoked link is revoked whatever else
/// holds, then an expired one expired, then a link that took all its files is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Active,
    /// Took `max_files` files: the borrower can still look, not send more.
    Full,
    Expired,
    Revoked,
}

impl LinkState {
    pub fn at(
        now: OffsetDateTime,
        revoked_at: Option<OffsetDateTime>,
        expires_at: OffsetDateTime,
        (files_accepted, max_files): (i64, i32),
    ) -> LinkState {
        if revoked_at.is_some() {
            LinkState::Revoked
        } else if expires_at <= now {
            LinkState::Expired
        } else if files_accepted >= i64::from(max_files) {
            LinkState::Full
        } else {
            LinkState::Active
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Active => "active",
            LinkState::Full => "full",
            LinkState::Expired => "expired",
            LinkState::Revoked => "revoked",
        }
    }
}

/// Links are looked up by the SHA-256 of their token: the token itself is never stored.
pub use crate::crypto::token_hash;

pub fn token_at(id: Uuid) -> Location<'static> {
    Location {
        table: "upload_links",
        column: "token_enc",
        row: id,
    }
}

pub fn email_at(id: Uuid) -> Location<'static> {
    Location {
        table: "upload_links",
        column: "borrower_email_enc",
        row: id,
    }
}

/// The audit actor of a borrower acting through a link (no account, no PII).
pub fn borrower_actor(link: Uuid) -> crate::auth::Actor {
    crate::auth::Actor::borrower(format!("borrower:link:{link}"))
}
