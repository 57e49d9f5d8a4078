//! The only code that runs SQL on `loans` and `loan_status_history`.

use rust_decimal::Decimal;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::pipeline::PipelineFilter;
use super::{AtLos, LoanOwner, LoanStatus, LoanType, StatusAndLosId};
use crate::auth::ReadScope;

#[derive(Debug)]
pub struct LoanRow {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub owner_subject: String,
    pub team: Option<String>,
    pub loan_type: String,
    pub amount: Decimal,
    pub property_enc: Vec<u8>,
    pub status: LoanStatus,
    pub version: i64,
    pub los_loan_id: Option<String>,
    pub los_milestone: Option<String>,
    pub needs_attention_reason: Option<String>,
    pub needs_attention_since: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// `query_as!` into a [`LoanRow`]: the loan's columns (`from loans o`) followed by `$tail`.
macro_rules! select_loan {
    ($first:tt $(+ $tail:tt)* $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            LoanRow,
            "select o.id, o.lead_id, o.owner_subject, o.team, o.loan_type, o.amount,
                    o.property_enc, o.status, o.version, o.los_loan_id, o.los_milestone,
                    o.needs_attention_reason, o.needs_attention_since, o.created_at, o.updated_at
               from loans o " + $first $(+ $tail)*
            $(, $arg)*
        )
    };
}

/// One loan within `scope` (`for_update` locks it for a transition).
pub async fn fetch(
    conn: &mut PgConnection,
    id: Uuid,
    scope: &ReadScope,
    for_update: bool,
) -> Result<Option<LoanRow>, sqlx::Error> {
    let (owner, team) = (scope.owner(), scope.team());
    if for_update {
        select_loan!(
            "where o.id = $1 and ($2::text is null or o.owner_subject = $2)
                and ($3::text is null or o.team = $3)
                and not exists (select 1 from leads d where d.id = o.lead_id and d.disposed_at is not null)
             for update",
            id,
            owner,
            team
        )
        .fetch_optional(conn)
        .await
    } else {
        select_loan!(
            "where o.id = $1 and ($2::text is null or o.owner_subject = $2)
                and ($3::text is null or o.team = $3)
                and not exists (select 1 from leads d where d.id = o.lead_id and d.disposed_at is not null)",
            id,
            owner,
            team
        )
        .fetch_optional(conn)
        .await
    }
}

/// The lead (borrower file) of a loan within `scope`.
pub async fn lead_of(
    conn: &mut PgConnection,
    loan: Uuid,
    scope: &ReadScope,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "select o.lead_id from loans o join leads l on l.id = o.lead_id
          where o.id = $1 and l.disposed_at is null
            and ($2::text is null or o.owner_subject = $2) and ($3::text is null or o.team = $3)",
        loan,
        scope.owner(),
        scope.team(),
    )
    .fetch_optional(conn)
    .await
}

/// How many loans are in one status.
pub struct StatusCount {
    pub status: LoanStatus,
    pub count: i64,
}

/// Loans per status within `scope` (one static statement per scope: the dashboard's plan
/// depends on it).
pub async fn status_counts(
    conn: &mut PgConnection,
    scope: &ReadScope,
) -> Result<Vec<StatusCount>, sqlx::Error> {
    match scope {
        ReadScope::Own(subject) => {
            sqlx::query_as!(
                StatusCount,
                r#"select o.status, count(*) as "count!" from loans o
                    where o.owner_subject = $1 group by o.status"#,
                subject
            )
            .fetch_all(conn)
            .await
        }
        ReadScope::Team(team) => {
            sqlx::query_as!(
                StatusCount,
                r#"select o.status, count(*) as "count!" from loans o
                    where o.team = $1 group by o.status"#,
                team
            )
            .fetch_all(conn)
            .await
        }
        ReadScope::All => {
            sqlx::query_as!(
                StatusCount,
                r#"select o.status, count(*) as "count!" from loans o group by o.status"#
            )
            .fetch_all(conn)
            .await
        }
    }
}

/// The dashboard's page with the scope's condition (`$4`) spliced in; the status and the
/// cursor are nullable parameters.
macro_rules! loan_page {
    ($scope:tt, $status:expr, $cursor:expr, $fetch:expr $(, $scope_arg:expr)?) => {
        select_loan!(
            "where ($1::text is null or o.status = $1) and ($2::uuid is null or o.id < $2)
               and not exists (select 1 from leads d where d.id = o.lead_id and d.disposed_at is not null)"
                + $scope + " order by o.id desc limit $3",
            $status as Option<LoanStatus>,
            $cursor,
            $fetch
            $(, $scope_arg)?
        )
    };
}

/// Up to `fetch` loans within `scope`, newest first, before `cursor`.
pub async fn page(
    conn: &mut PgConnection,
    scope: &ReadScope,
    status: Option<LoanStatus>,
    cursor: Option<Uuid>,
    fetch: i64,
) -> Result<Vec<LoanRow>, sqlx::Error> {
    match scope {
        ReadScope::Own(subject) => {
            loan_page!(" and o.owner_subject = $4", status, cursor, fetch, subject)
                .fetch_all(conn)
                .await
        }
        ReadScope::Team(team) => {
            loan_page!(" and o.team = $4", status, cursor, fetch, team)
                .fetch_all(conn)
                .await
        }
        ReadScope::All => loan_page!("", status, cursor, fetch).fetch_all(conn).await,
    }
}

/// A new loan's row, its property already sealed.
pub struct NewLoanRow<'a> {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub owner_subject: &'a str,
    pub team: Option<&'a str>,
    pub loan_type: LoanType,
    pub amount: Decimal,
    pub property_enc: &'a [u8],
}

pub async fn insert(tx: &mut PgConnection, loan: &NewLoanRow<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into loans (id, lead_id, owner_subject, team, loan_type, amount, property_enc)
         values ($1, $2, $3, $4, $5, $6, $7)",
        loan.id,
        loan.lead_id,
        loan.owner_subject,
        loan.team,
        loan.loan_type.as_str(),
        loan.amount,
        loan.property_enc,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// The status change and its history row (reason sealed by the caller).
pub async fn record_transition(
    tx: &mut PgConnection,
    id: Uuid,
    from: LoanStatus,
    to: LoanStatus,
    actor_subject: &str,
    reason_enc: Option<&[u8]>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update loans set status = $2, version = version + 1, updated_at = now() where id = $1",
        id,
        to as LoanStatus,
    )
    .execute(&mut *tx)
    .await?;
    insert_history(tx, id, from, to, actor_subject, reason_enc).await
}

/// A history row (from = to for a milestone recorded without a status change).
pub async fn insert_history(
    tx: &mut PgConnection,
    id: Uuid,
    from: LoanStatus,
    to: LoanStatus,
    actor_subject: &str,
    reason_enc: Option<&[u8]>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into loan_status_history (loan_id, from_status, to_status, actor_subject, reason_enc)
         values ($1, $2, $3, $4, $5)",
        id,
        from as LoanStatus,
        to as LoanStatus,
        actor_subject,
        reason_enc,
    )
    .execute(tx)
    .await?;
    Ok(())
}

#[derive(Debug)]
pub struct HistoryRow {
    pub id: i64,
    pub from_status: LoanStatus,
    pub to_status: LoanStatus,
    pub actor_subject: String,
    pub reason_enc: Option<Vec<u8>>,
    pub at: OffsetDateTime,
}

/// Up to `fetch` transitions of a loan, oldest first, after the sequence number `after`.
pub async fn history(
    conn: &mut PgConnection,
    loan: Uuid,
    after: Option<i64>,
    fetch: i64,
) -> Result<Vec<HistoryRow>, sqlx::Error> {
    sqlx::query_as!(
        HistoryRow,
        "select id, from_status, to_status, actor_subject, reason_enc, at
           from loan_status_history where loan_id = $1 and ($2::bigint is null or id > $2)
          order by id limit $3",
        loan,
        after,
        fetch,
    )
    .fetch_all(conn)
    .await
}

pub async fn owner_and_team(conn: &mut PgConnection, loan: Uuid) -> Result<LoanOwner, sqlx::Error> {
    sqlx::query_as!(
        LoanOwner,
        "select owner_subject, team from loans where id = $1",
        loan
    )
    .fetch_one(conn)
    .await
}

/// A loan's borrower file and status.
pub struct LeadAndStatus {
    pub lead_id: Uuid,
    pub status: LoanStatus,
}

/// The loan's lead and status, the row locked.
pub async fn lead_and_status_for_update(
    tx: &mut PgConnection,
    loan: Uuid,
) -> Result<Option<LeadAndStatus>, sqlx::Error> {
    sqlx::query_as!(
        LeadAndStatus,
        "select lead_id, status from loans where id = $1 for update",
        loan
    )
    .fetch_optional(tx)
    .await
}

pub async fn set_los_milestone(
    tx: &mut PgConnection,
    loan: Uuid,
    milestone: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update loans set los_milestone = $2 where id = $1",
        loan,
        milestone
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Record a milestone that changes no status; false when the loan already had it.
pub async fn change_los_milestone(
    tx: &mut PgConnection,
    loan: Uuid,
    milestone: &str,
) -> Result<bool, sqlx::Error> {
    let changed = sqlx::query!(
        "update loans set los_milestone = $2, updated_at = now()
          where id = $1 and los_milestone is distinct from $2",
        loan,
        milestone,
    )
    .execute(tx)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

/// Flag the lead's open loans (draft, submitted, underwriting) with `reason`; their ids.
pub async fn flag_open_loans_of_lead(
    tx: &mut PgConnection,
    lead: Uuid,
    reason: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "update loans set needs_attention_reason = $2, needs_attention_since = now(), updated_at = now()
          where lead_id = $1 and status in ('draft', 'submitted', 'underwriting')
          returning id",
        lead,
        reason
    )
    .fetch_all(tx)
    .await
}

pub async fn flag_needs_attention(
    tx: &mut PgConnection,
    loan: Uuid,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update loans set needs_attention_reason = $2, needs_attention_since = now(), updated_at = now() where id = $1",
        loan,
        reason,
    )
    .execute(tx)
    .await?;
    Ok(())
}

#[derive(Debug)]
pub struct SubmissionRow {
    pub lead_id: Uuid,
    pub status: LoanStatus,
    pub los_loan_id: Option<String>,
    pub loan_type: String,
    pub amount: String,
}

pub async fn for_submission(
    tx: &mut PgConnection,
    loan: Uuid,
) -> Result<Option<SubmissionRow>, sqlx::Error> {
    sqlx::query_as!(
        SubmissionRow,
        r#"select lead_id, status, los_loan_id, loan_type, amount::text as "amount!"
             from loans where id = $1 for update"#,
        loan
    )
    .fetch_optional(tx)
    .await
}

pub async fn set_los_loan_id(
    tx: &mut PgConnection,
    loan: Uuid,
    los_loan_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update loans set los_loan_id = $2, updated_at = now(),
                needs_attention_reason = case when needs_attention_reason like 'los_%' then null else needs_attention_reason end,
                needs_attention_since = case when needs_attention_reason like 'los_%' then null else needs_attention_since end
          where id = $1",
        loan,
        los_loan_id,
    )
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn awaiting_los(db: &sqlx::PgPool, limit: i64) -> Result<Vec<AtLos>, sqlx::Error> {
    sqlx::query_as!(
        AtLos,
        r#"select id, los_loan_id as "los_loan_id!" from loans
            where status in ('submitted', 'underwriting') and los_loan_id is not null
            order by updated_at limit $1"#,
        limit
    )
    .fetch_all(db)
    .await
}

pub async fn by_los_loan_id(
    tx: &mut PgConnection,
    los_loan_id: &str,
    loan: Option<Uuid>,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "select id from loans where los_loan_id = $1 and ($2::uuid is null or id = $2)",
        los_loan_id,
        loan,
    )
    .fetch_optional(tx)
    .await
}

pub async fn status_and_los_id_for_update(
    tx: &mut PgConnection,
    loan: Uuid,
) -> Result<StatusAndLosId, sqlx::Error> {
    sqlx::query_as!(
        StatusAndLosId,
        "select status, los_loan_id from loans where id = $1 for update",
        loan
    )
    .fetch_one(tx)
    .await
}

/// A loan as the console's pipeline lists it: the loan, its borrower's clear-text name, and
/// whether it has requests still open and overdue.
#[derive(Debug)]
pub struct PipelineRow {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub owner_subject: String,
    pub team: Option<String>,
    pub loan_type: String,
    pub amount: Decimal,
    pub status: LoanStatus,
    pub needs_attention_reason: Option<String>,
    pub los_milestone: Option<String>,
    pub updated_at: OffsetDateTime,
    pub first_name: String,
    pub last_name: String,
    pub outstanding: bool,
    pub overdue: bool,
}

/// The pipeline's statement with the scope's condition (`$10`) spliced in.
macro_rules! pipeline_page {
    ($scope:tt, $f:expr, $fetch:expr $(, $scope_arg:expr)?) => {
        sqlx::query_as!(
            PipelineRow,
            r#"select o.id, o.lead_id, o.owner_subject, o.team, o.loan_type, o.amount, o.status,
                      o.needs_attention_reason, o.los_milestone, o.updated_at,
                      l.first_name, l.last_name,
                      exists (select 1 from document_requests r
                               where r.loan_id = o.id and r.state in ('outstanding', 'rejected'))
                        as "outstanding!",
                      exists (select 1 from document_requests r
                               where r.loan_id = o.id and r.state in ('outstanding', 'rejected')
                                 and r.due_date < current_date) as "overdue!"
                 from loans o join leads l on l.id = o.lead_id
                where ($1::text is null or o.status = $1)
                  and (not $2 or o.needs_attention_reason is not null)
                  and (not $3 or exists (select 1 from document_requests r
                               where r.loan_id = o.id and r.state in ('outstanding', 'rejected')))
                  and (not $4 or exists (select 1 from document_requests r
                               where r.loan_id = o.id and r.state in ('outstanding', 'rejected')
                                 and r.due_date < current_date))
                  and ($5::text is null or lower(l.last_name) like $5
                       or lower(l.first_name) like $5
                       or lower(l.first_name || ' ' || l.last_name) like $5)
                  and ($6::timestamptz is null or (o.updated_at, o.id) < ($6, $7::uuid))
                  and ($9::uuid is null or o.lead_id = $9)
                  and l.disposed_at is null"#
                + $scope + " order by o.updated_at desc, o.id desc limit $8",
            $f.status as Option<LoanStatus>,
            $f.needs_attention,
            $f.outstanding,
            $f.overdue,
            $f.name_pattern,
            $f.before.map(|b| b.0),
            $f.before.map(|b| b.1),
            $fetch,
            $f.lead
            $(, $scope_arg)?
        )
    };
}

/// Up to `fetch` loans within `scope`, most recently active first.
pub async fn pipeline(
    conn: &mut PgConnection,
    scope: &ReadScope,
    filter: &PipelineFilter,
    fetch: i64,
) -> Result<Vec<PipelineRow>, sqlx::Error> {
    match scope {
        ReadScope::Own(subject) => {
            pipeline_page!(" and o.owner_subject = $10", filter, fetch, subject)
                .fetch_all(conn)
                .await
        }
        ReadScope::Team(team) => {
            pipeline_page!(" and o.team = $10", filter, fetch, team)
                .fetch_all(conn)
                .await
        }
        ReadScope::All => pipeline_page!("", filter, fetch).fetch_all(conn).await,
    }
}

/// One agent's loans in one status, and how many of that agent's loans have overdue
/// requests (the same on every row of the agent).
#[derive(Debug)]
pub struct AgentStatusCount {
    pub owner_subject: String,
    pub status: LoanStatus,
    pub count: i64,
    pub overdue: i64,
}

/// Per-agent loan counts by status in `team` (every team when `None`).
pub async fn agent_counts(
    conn: &mut PgConnection,
    team: Option<&str>,
) -> Result<Vec<AgentStatusCount>, sqlx::Error> {
    sqlx::query_as!(
        AgentStatusCount,
        r#"with scoped as (
               select o.id, o.owner_subject, o.status from loans o
                where ($1::text is null or o.team = $1)
           ), overdue as (
               select s.owner_subject, count(distinct s.id) as n from scoped s
                 join document_requests r on r.loan_id = s.id
                where r.state in ('outstanding', 'rejected') and r.due_date < current_date
                group by s.owner_subject
           )
           select s.owner_subject, s.status as "status: LoanStatus", count(*) as "count!",
                  coalesce(max(d.n), 0) as "overdue!"
             from scoped s left join overdue d on d.owner_subject = s.owner_subject
            group by s.owner_subject, s.status
            order by s.owner_subject, s.status"#,
        team
    )
    .fetch_all(conn)
    .await
}

/// Disposal (docs/operations/retention.md): the loans of the borrower file `lead` keep their
/// ids, types, states and dates; the property is dropped and the amount rounded up to the
/// next $50,000, so statistics stay and no loan can be told by its amount.
pub async fn blank_for_disposal(tx: &mut PgConnection, leads: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        // The largest amount rounds up past numeric(14, 2): the bucket is capped.
        "update loans set property_enc = '\\x',
                amount = least(ceil(amount / 50000) * 50000, 999999999999.99),
                version = version + 1
          where lead_id = any($1)",
        leads
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update loan_status_history set reason_enc = null
          where loan_id in (select id from loans where lead_id = any($1))",
        leads
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
