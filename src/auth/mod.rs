//! Agent identity (docs/security.md): bearer access tokens from the OIDC issuer, MFA, roles and
//! teams from configurable claims, the per-request `Actor`, and just-in-time agents.

pub mod agents;
pub mod discovery;
pub mod jwks;
pub mod session;
pub mod token;

pub use crate::actor::{Actor, ReadScope, Role, SideEffects};
pub use crate::error::AuthError;
