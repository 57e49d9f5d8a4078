//! Agent identity. This module grows the bearer-token verifier and the browser login; for
//! now it holds the issuer's discovery client used by readiness.

pub mod discovery;
