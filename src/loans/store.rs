//! The only code that runs SQL on `loans` and `loan_status_history`.

use rust_decimal::Decimal;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{LoanStatus, LoanType};
use crate::auth::ReadScope;
use crate::db::push_scope;

#[derive(Debug, sqlx::FromRow)]
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

const SELECT_LOAN: &str = "select o.id, o.lead_id, o.owner_subject, o.team, o.loan_type, o.amount,
        o.property_enc, o.status, o.version, o.los_loan_id, o.los_milestone,
        o.needs_attention_reason, o.needs_attention_since, o.created_at, o.updated_at
   from loans o";

/// One loan within `scope` (`for_update` locks it for a transition).
pub async fn fetch(
    conn: &mut PgConnection,
    id: Uuid,
    scope: &ReadScope,
    for_update: bool,
) -> Result<Option<LoanRow>, sqlx::Error> {
    let mut query = QueryBuilder::<Postgres>::new(SELECT_LOAN);
    query.push(" where o.id = ").push_bind(id);
    push_scope(&mut query, "o", scope);
    if for_update {
        query.push(" for update");
    }
    query.build_query_as::<LoanRow>().fetch_optional(conn).await
}

/// The lead (borrower file) of a loan within `scope`.
pub async fn lead_of(
    conn: &mut PgConnection,
    loan: Uuid,
    scope: &ReadScope,
) -> Result<Option<Uuid>, sqlx::Error> {
    let mut query = QueryBuilder::<Postgres>::new("select o.lead_id from loans o where o.id = ");
    query.push_bind(loan);
    push_scope(&mut query, "o", scope);
    query.build_query_scalar().fetch_optional(conn).await
}

/// Loans per status within `scope`.
pub async fn status_counts(
    conn: &mut PgConnection,
    scope: &ReadScope,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let mut query =
        QueryBuilder::<Postgres>::new("select o.status, count(*) from loans o where true");
    push_scope(&mut query, "o", scope);
    query.push(" group by o.status");
    query.build_query_as().fetch_all(conn).await
}

/// Up to `fetch` loans within `scope`, newest first, before `cursor`.
pub async fn page(
    conn: &mut PgConnection,
    scope: &ReadScope,
    status: Option<LoanStatus>,
    cursor: Option<Uuid>,
    fetch: i64,
) -> Result<Vec<LoanRow>, sqlx::Error> {
    let mut query = QueryBuilder::<Postgres>::new(SELECT_LOAN);
    query.push(" where true");
    push_scope(&mut query, "o", scope);
    if let Some(status) = status {
        query.push(" and o.status = ").push_bind(status.as_str());
    }
    if let Some(cursor) = cursor {
        query.push(" and o.id < ").push_bind(cursor);
    }
    query.push(" order by o.id desc limit ").push_bind(fetch);
    query.build_query_as().fetch_all(conn).await
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
    // language=PostgreSQL
    sqlx::query(
        "insert into loans (id, lead_id, owner_subject, team, loan_type, amount, property_enc)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(loan.id)
    .bind(loan.lead_id)
    .bind(loan.owner_subject)
    .bind(loan.team)
    .bind(loan.loan_type.as_str())
    .bind(loan.amount)
    .bind(loan.property_enc)
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
    // language=PostgreSQL
    sqlx::query(
        "update loans set status = $2, version = version + 1, updated_at = now() where id = $1",
    )
    .bind(id)
    .bind(to.as_str())
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
    // language=PostgreSQL
    sqlx::query(
        "insert into loan_status_history (loan_id, from_status, to_status, actor_subject, reason_enc)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(actor_subject)
    .bind(reason_enc)
    .execute(tx)
    .await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
pub struct HistoryRow {
    pub id: i64,
    pub from_status: String,
    pub to_status: String,
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
    // language=PostgreSQL
    sqlx::query_as(
        "select id, from_status, to_status, actor_subject, reason_enc, at
           from loan_status_history where loan_id = $1 and ($2::bigint is null or id > $2)
          order by id limit $3",
    )
    .bind(loan)
    .bind(after)
    .bind(fetch)
    .fetch_all(conn)
    .await
}

pub async fn owner_and_team(
    conn: &mut PgConnection,
    loan: Uuid,
) -> Result<(String, Option<String>), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_as("select owner_subject, team from loans where id = $1")
        .bind(loan)
        .fetch_one(conn)
        .await
}

/// The loan's lead and status (as stored), the row locked.
pub async fn lead_and_status_for_update(
    tx: &mut PgConnection,
    loan: Uuid,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_as("select lead_id, status from loans where id = $1 for update")
        .bind(loan)
        .fetch_optional(tx)
        .await
}

pub async fn set_los_milestone(
    tx: &mut PgConnection,
    loan: Uuid,
    milestone: &str,
) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query("update loans set los_milestone = $2 where id = $1")
        .bind(loan)
        .bind(milestone)
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
    // language=PostgreSQL
    let changed = sqlx::query(
        "update loans set los_milestone = $2, updated_at = now()
          where id = $1 and los_milestone is distinct from $2",
    )
    .bind(loan)
    .bind(milestone)
    .execute(tx)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

pub async fn flag_needs_attention(
    tx: &mut PgConnection,
    loan: Uuid,
    reason: &str,
) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query(
        "update loans set needs_attention_reason = $2, needs_attention_since = now(), updated_at = now() where id = $1",
    )
    .bind(loan)
    .bind(reason)
    .execute(tx)
    .await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
pub struct SubmissionRow {
    pub lead_id: Uuid,
    pub status: String,
    pub los_loan_id: Option<String>,
    pub loan_type: String,
    pub amount: String,
}

pub async fn for_submission(
    tx: &mut PgConnection,
    loan: Uuid,
) -> Result<Option<SubmissionRow>, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_as(
        "select lead_id, status, los_loan_id, loan_type, amount::text as amount from loans where id = $1 for update",
    )
    .bind(loan)
    .fetch_optional(tx)
    .await
}

pub async fn set_los_loan_id(
    tx: &mut PgConnection,
    loan: Uuid,
    los_loan_id: &str,
) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query(
        "update loans set los_loan_id = $2, updated_at = now(),
                needs_attention_reason = case when needs_attention_reason like 'los_%' then null else needs_attention_reason end,
                needs_attention_since = case when needs_attention_reason like 'los_%' then null else needs_attention_since end
          where id = $1",
    )
    .bind(loan)
    .bind(los_loan_id)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn awaiting_los(
    db: &sqlx::PgPool,
    limit: i64,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_as(
        "select id, los_loan_id from loans
          where status in ('submitted', 'underwriting') and los_loan_id is not null
          order by updated_at limit $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn by_los_loan_id(
    tx: &mut PgConnection,
    los_loan_id: &str,
    loan: Option<Uuid>,
) -> Result<Option<Uuid>, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_scalar(
        "select id from loans where los_loan_id = $1 and ($2::uuid is null or id = $2)",
    )
    .bind(los_loan_id)
    .bind(loan)
    .fetch_optional(tx)
    .await
}

pub async fn status_and_los_id_for_update(
    tx: &mut PgConnection,
    loan: Uuid,
) -> Result<(String, Option<String>), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_as("select status, los_loan_id from loans where id = $1 for update")
        .bind(loan)
        .fetch_one(tx)
        .await
}
