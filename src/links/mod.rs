//! Upload links: the borrower's scoped, revocable capability to send files for one loan.

pub mod http;
pub mod ops;
pub mod store;

use uuid::Uuid;

use crate::crypto::field::Location;

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
