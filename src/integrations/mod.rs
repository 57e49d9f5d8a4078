//! Clients of external systems (docs/architecture.md "Integrations"): timeouts on every call, a
//! circuit breaker per system, and errors sorted into transient (retry) and permanent.

pub mod breaker;
pub mod bureau;
pub mod los;
pub mod webhook_signature;
