//! Agents as an administrator manages them: who has signed in, and disabling an account
//! (their sign-in itself, and the cache of provisioned agents: `crate::auth`).

pub mod http;
pub mod ops;
pub mod store;

/// What [`set_disabled`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    /// No such agent.
    Unknown,
    /// Already in that state: nothing written.
    Unchanged,
    /// Changed; with disabling, this many sessions ended.
    Done { sessions_ended: usize },
}
