//! The pipeline (the console's home, docs/console.md): a scope's loans by last activity with
//! the filters an agent works by, and a manager's per-agent counts. Read models only: the
//! scope is the caller's read scope, as for `GET /v1/loans`.

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::LoanStatus;
use super::store::{self, PipelineRow};
use crate::auth::{Actor, ReadScope, Role};
use crate::db::next_page;
use crate::domain::rfc3339;
use crate::error::AppError;
use crate::state::AppState;

/// The pipeline's filters; each is a nullable (or false) parameter of one static statement.
#[derive(Debug, Default)]
pub struct PipelineFilter {
    pub status: Option<LoanStatus>,
    pub needs_attention: bool,
    pub outstanding: bool,
    pub overdue: bool,
    /// A `like` pattern, lower case, escaped (`leads::ops::name_pattern`).
    pub name_pattern: Option<String>,
    /// Loans less recently active than this (the previous page's last row).
    pub before: Option<(OffsetDateTime, Uuid)>,
    /// One borrower file's loans only.
    pub lead: Option<Uuid>,
}

/// A loan in the pipeline, as the caller may see it.
#[derive(Debug, Serialize)]
pub struct PipelineLoan {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub borrower: String,
    pub loan_type: String,
    pub amount: String,
    pub status: LoanStatus,
    pub owner: String,
    /// Why the loan needs attention (a failed credit pull, an LOS sync to re-drive…).
    pub needs_attention: Option<String>,
    pub los_milestone: Option<String>,
    pub documents_outstanding: bool,
    pub overdue: bool,
    pub last_activity: String,
}

#[derive(Debug, Serialize)]
pub struct Pipeline {
    pub items: Vec<PipelineLoan>,
    pub next_cursor: Option<String>,
}

/// `<unix microseconds>.<id>` of a row: where the next page starts.
fn cursor_of(row: &PipelineRow) -> String {
    format!(
        "{}.{}",
        row.updated_at.unix_timestamp_nanos() / 1000,
        row.id
    )
}

/// A cursor `cursor_of` wrote, or `None` for anything else.
pub fn parse_cursor(cursor: &str) -> Option<(OffsetDateTime, Uuid)> {
    let (micros, id) = cursor.split_once('.')?;
    let micros: i128 = micros.parse().ok()?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(micros.checked_mul(1000)?).ok()?;
    Some((at, Uuid::parse_str(id).ok()?))
}

/// A page of the caller's pipeline.
pub async fn page(
    state: &AppState,
    actor: &Actor,
    filter: &PipelineFilter,
    limit: i64,
) -> Result<Pipeline, AppError> {
    let mut conn = state.db.acquire().await?;
    let mut rows = store::pipeline(&mut conn, &actor.read_scope(), filter, limit + 1).await?;
    let next_cursor = next_page(&mut rows, limit, cursor_of);
    let items = rows
        .into_iter()
        .map(|r| PipelineLoan {
            id: r.id,
            lead_id: r.lead_id,
            borrower: format!("{} {}", r.first_name, r.last_name),
            loan_type: r.loan_type,
            amount: format!("{:.2}", r.amount),
            status: r.status,
            owner: r.owner_subject,
            needs_attention: r.needs_attention_reason,
            los_milestone: r.los_milestone,
            documents_outstanding: r.outstanding,
            overdue: r.overdue,
            last_activity: rfc3339(r.updated_at),
        })
        .collect();
    Ok(Pipeline { items, next_cursor })
}

/// One agent's row of the team view.
#[derive(Debug, Serialize)]
pub struct AgentLoad {
    pub agent: String,
    pub by_status: BTreeMap<String, i64>,
    pub total: i64,
    pub overdue: i64,
}

/// Per-agent loan counts by status and loans with overdue requests: a manager's own team;
/// compliance and admin every team; anyone else 403.
pub async fn team(state: &AppState, actor: &Actor) -> Result<Vec<AgentLoad>, AppError> {
    let team = match actor.read_scope() {
        ReadScope::All => None,
        ReadScope::Team(team) if actor.has(Role::Manager) => Some(team),
        _ => return Err(AppError::forbidden()),
    };
    let mut conn = state.db.acquire().await?;
    let rows = store::agent_counts(&mut conn, team.as_deref()).await?;
    let mut agents: Vec<AgentLoad> = Vec::new();
    for row in rows {
        if agents.last().is_none_or(|a| a.agent != row.owner_subject) {
            agents.push(AgentLoad {
                agent: row.owner_subject.clone(),
                by_status: LoanStatus::ALL
                    .iter()
                    .map(|s| (s.as_str().to_owned(), 0))
                    .collect(),
                total: 0,
                overdue: row.overdue,
            });
        }
        if let Some(agent) = agents.last_mut() {
            agent
                .by_status
                .insert(row.status.as_str().to_owned(), row.count);
            agent.total += row.count;
        }
    }
    Ok(agents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_garbage_is_refused() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_764_000_000_123_456_000).unwrap();
        let id = Uuid::now_v7();
        let row = PipelineRow {
            id,
            lead_id: id,
            owner_subject: String::new(),
            team: None,
            loan_type: String::new(),
            amount: rust_decimal::Decimal::ZERO,
            status: LoanStatus::Draft,
            needs_attention_reason: None,
            los_milestone: None,
            updated_at: at,
            first_name: String::new(),
            last_name: String::new(),
            outstanding: false,
            overdue: false,
        };
        assert_eq!(parse_cursor(&cursor_of(&row)), Some((at, id)));
        for bad in [
            "",
            ".",
            "x.y",
            "1.not-a-uuid",
            "99999999999999999999999999.00000000-0000-0000-0000-000000000000",
        ] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
    }
}
