//! Agents as an administrator manages them: who has signed in, and disabling an account
//! (their sign-in itself, and the cache of provisioned agents: `crate::auth`).

pub mod http;
pub mod ops;
pub mod store;

use serde::Serialize;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Agent {
    pub subject: String,
    pub display_name: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub team: Option<String>,
    pub disabled_at: Option<String>,
    pub first_seen_at: String,
    pub last_seen_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentList {
    pub items: Vec<Agent>,
    pub next_cursor: Option<String>,
}

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
