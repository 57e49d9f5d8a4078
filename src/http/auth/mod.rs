//! Agents' sign-in at the HTTP edge: the middleware that turns a bearer token or a session
//! cookie into an `Actor`, the OIDC authorization-code flow, and the periodic re-check of
//! cookie sessions (tokens, sessions and the `Actor` itself: `crate::auth`).

pub mod login;
pub mod middleware;
pub mod recheck;
