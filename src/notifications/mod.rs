//! What borrowers and agents are told: the notifier (email and SMS from queue events), the
//! document reminders, unsubscribe and SMS consent (the mailer and its templates: `crate::mail`).

pub mod http;
pub mod ops;
mod recipients;
pub mod reminders;
pub mod store;
pub mod worker;
