//! Upload links: the borrower's scoped, revocable capability to send files for one loan.

pub mod http;
pub mod ops;
pub mod store;

/// The link's rules as SQL literals, for other aggregates' compile-checked statements.
pub(crate) use store::link_rules_sql;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::crypto::field::Location;

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
