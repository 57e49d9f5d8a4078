//! The loan origination system: submissions, milestone webhooks and their reconciliation.

pub mod http;
pub mod ops;
pub mod store;
pub mod worker;
