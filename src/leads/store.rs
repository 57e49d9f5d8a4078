//! The only code that runs SQL on `leads`.

use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{LeadStatus, LoanPurpose, ValidLead};
use crate::auth::ReadScope;
use crate::db::push_scope;

#[derive(Debug, sqlx::FromRow)]
pub struct LeadRow {
    pub id: Uuid,
    pub owner_subject: String,
    pub owner_name: Option<String>,
    pub team: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub email_enc: Option<Vec<u8>>,
    pub phone_enc: Option<Vec<u8>>,
    pub ssn_enc: Option<Vec<u8>>,
    pub date_of_birth_enc: Option<Vec<u8>>,
    pub annual_income_enc: Option<Vec<u8>>,
    pub address_enc: Option<Vec<u8>>,
    pub notes_enc: Option<Vec<u8>>,
    pub loan_purpose: Option<String>,
    pub source: Option<String>,
    pub status: LeadStatus,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const SELECT_LEAD: &str = "select l.id, l.owner_subject, a.display_name as owner_name, l.team,
        l.first_name, l.last_name, l.email_enc, l.phone_enc, l.ssn_enc, l.date_of_birth_enc,
        l.annual_income_enc, l.address_enc, l.notes_enc, l.loan_purpose, l.source, l.status,
        l.version, l.created_at, l.updated_at
   from leads l left join agents a on a.subject = l.owner_subject";

/// One lead within `scope` (`for_update` locks it for a change).
pub async fn fetch(
    db: &mut PgConnection,
    id: Uuid,
    scope: &ReadScope,
    for_update: bool,
) -> Result<Option<LeadRow>, sqlx::Error> {
    let mut query = QueryBuilder::<Postgres>::new(SELECT_LEAD);
    query.push(" where l.id = ").push_bind(id);
    push_scope(&mut query, "l", scope);
    if for_update {
        query.push(" for update of l");
    }
    query.build_query_as::<LeadRow>().fetch_optional(db).await
}

/// A lead's encrypted fields and the SSN's blind index, as stored.
pub struct SealedLead {
    pub email: Option<Vec<u8>>,
    pub phone: Option<Vec<u8>>,
    pub ssn: Option<Vec<u8>>,
    pub ssn_index: Option<i32>,
    pub dob: Option<Vec<u8>>,
    pub income: Option<Vec<u8>>,
    pub address: Option<Vec<u8>>,
    pub notes: Option<Vec<u8>>,
}

/// Bind a lead's stored fields as the next 13 parameters, in the order the insert and the
/// update both list them (first_name … status).
fn bind_fields<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    lead: &'q ValidLead,
    sealed: &'q SealedLead,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(&lead.first_name)
        .bind(&lead.last_name)
        .bind(&sealed.email)
        .bind(&sealed.phone)
        .bind(&sealed.ssn)
        .bind(sealed.ssn_index)
        .bind(&sealed.dob)
        .bind(&sealed.income)
        .bind(&sealed.address)
        .bind(&sealed.notes)
        .bind(lead.loan_purpose.map(LoanPurpose::as_str))
        .bind(&lead.source)
        .bind(lead.status.as_str())
}

pub async fn insert(
    tx: &mut PgConnection,
    id: Uuid,
    lead: &ValidLead,
    sealed: &SealedLead,
    owner_subject: &str,
    team: Option<&str>,
) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    let insert = sqlx::query(
        "insert into leads (id, first_name, last_name, email_enc, phone_enc, ssn_enc, ssn_index,
                            date_of_birth_enc, annual_income_enc, address_enc, notes_enc,
                            loan_purpose, source, status, owner_subject, team)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(id);
    bind_fields(insert, lead, sealed)
        .bind(owner_subject)
        .bind(team)
        .execute(tx)
        .await?;
    Ok(())
}

pub async fn update(
    tx: &mut PgConnection,
    id: Uuid,
    lead: &ValidLead,
    sealed: &SealedLead,
) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    let update = sqlx::query(
        "update leads set first_name = $2, last_name = $3, email_enc = $4, phone_enc = $5,
                ssn_enc = $6, ssn_index = $7, date_of_birth_enc = $8, annual_income_enc = $9,
                address_enc = $10, notes_enc = $11, loan_purpose = $12, source = $13, status = $14,
                version = version + 1, updated_at = now()
          where id = $1",
    )
    .bind(id);
    bind_fields(update, lead, sealed).execute(tx).await?;
    Ok(())
}

/// Leads within `scope` other than `id` whose SSN has the blind index `index` (at most
/// 200; the caller decrypts to decide).
pub async fn ssn_candidates(
    db: &PgPool,
    index: i32,
    id: Uuid,
    scope: &ReadScope,
) -> Result<Vec<(Uuid, Option<Vec<u8>>)>, sqlx::Error> {
    let mut query =
        QueryBuilder::<Postgres>::new("select l.id, l.ssn_enc from leads l where l.ssn_index = ");
    query.push_bind(index).push(" and l.id <> ").push_bind(id);
    push_scope(&mut query, "l", scope);
    query.push(" limit 200");
    query.build_query_as().fetch_all(db).await
}

/// The list's filters, already validated.
pub struct ListFilter {
    pub status: Option<LeadStatus>,
    /// A `like` pattern, lower case, with the caller's `%`, `_` and `\` escaped.
    pub name_pattern: Option<String>,
    pub created_after: Option<OffsetDateTime>,
    pub before: Option<Uuid>,
}

/// Up to `fetch` leads within `scope`, newest first.
pub async fn list(
    db: &PgPool,
    scope: &ReadScope,
    filter: &ListFilter,
    fetch: i64,
) -> Result<Vec<LeadRow>, sqlx::Error> {
    let mut query = QueryBuilder::<Postgres>::new(SELECT_LEAD);
    query.push(" where true");
    push_scope(&mut query, "l", scope);
    if let Some(status) = filter.status {
        query.push(" and l.status = ").push_bind(status.as_str());
    }
    if let Some(pattern) = &filter.name_pattern {
        // One escaped pattern for all three: `%` and `_` typed by the caller are literal.
        query
            .push(" and (lower(l.first_name) like ")
            .push_bind(pattern.clone())
            .push(" or lower(l.last_name) like ")
            .push_bind(pattern.clone())
            .push(" or lower(l.first_name || ' ' || l.last_name) like ")
            .push_bind(pattern.clone())
            .push(")");
    }
    if let Some(after) = filter.created_after {
        query.push(" and l.created_at > ").push_bind(after);
    }
    if let Some(before) = filter.before {
        query.push(" and l.id < ").push_bind(before);
    }
    query.push(" order by l.id desc limit ").push_bind(fetch);
    query.build_query_as::<LeadRow>().fetch_all(db).await
}

/// The owner and team of a lead within `scope`, locked against deletion (`for share`) for
/// the rest of the caller's transaction.
pub async fn owner_for_share(
    tx: &mut PgConnection,
    lead: Uuid,
    scope: &ReadScope,
) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    let mut query =
        QueryBuilder::<Postgres>::new("select l.owner_subject, l.team from leads l where l.id = ");
    query.push_bind(lead);
    push_scope(&mut query, "l", scope);
    query.push(" for share");
    query.build_query_as().fetch_optional(tx).await
}

/// Whether the lead exists within `scope`.
pub async fn in_scope(
    conn: &mut PgConnection,
    lead: Uuid,
    scope: &ReadScope,
) -> Result<bool, sqlx::Error> {
    let mut query = QueryBuilder::<Postgres>::new("select 1 from leads l where l.id = ");
    query.push_bind(lead);
    push_scope(&mut query, "l", scope);
    let found: Option<i32> = query.build_query_scalar().fetch_optional(conn).await?;
    Ok(found.is_some())
}

/// Whether the lead carries what a credit pull needs (SSN, date of birth, address); `None`
/// when there is no such lead.
pub async fn subject_complete(
    conn: &mut PgConnection,
    lead: Uuid,
) -> Result<Option<bool>, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_scalar(
        "select ssn_enc is not null and date_of_birth_enc is not null and address_enc is not null
           from leads where id = $1",
    )
    .bind(lead)
    .fetch_optional(conn)
    .await
}

/// The lead's sealed email address (`None` when it has none; an error when there is no
/// such lead).
pub async fn email_enc(
    conn: &mut PgConnection,
    lead: Uuid,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_scalar("select email_enc from leads where id = $1")
        .bind(lead)
        .fetch_one(conn)
        .await
}

pub async fn set_sms_consent(
    tx: &mut PgConnection,
    lead: Uuid,
    obtained_at: OffsetDateTime,
    method: &str,
    by: &str,
) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query(
        "update leads set sms_consent_at = $2, sms_consent_method = $3, sms_consent_by = $4,
                sms_opted_out_at = null, updated_at = now() where id = $1",
    )
    .bind(lead)
    .bind(obtained_at)
    .bind(method)
    .bind(by)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn set_sms_opted_out(tx: &mut PgConnection, lead: Uuid) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query("update leads set sms_opted_out_at = now(), updated_at = now() where id = $1")
        .bind(lead)
        .execute(tx)
        .await?;
    Ok(())
}

pub async fn email_opted_out(conn: &mut PgConnection, lead: Uuid) -> Result<bool, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_scalar("select email_opted_out_at is not null from leads where id = $1")
        .bind(lead)
        .fetch_one(conn)
        .await
}

pub async fn set_email_opted_out(tx: &mut PgConnection, lead: Uuid) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query(
        "update leads set email_opted_out_at = now() where id = $1 and email_opted_out_at is null",
    )
    .bind(lead)
    .execute(tx)
    .await?;
    Ok(())
}

/// What a credit pull sends the bureau, as stored: the names, and the sealed SSN, date of
/// birth and address.
#[derive(Debug, sqlx::FromRow)]
pub struct CreditSubject {
    pub first_name: String,
    pub last_name: String,
    pub ssn_enc: Option<Vec<u8>>,
    pub date_of_birth_enc: Option<Vec<u8>>,
    pub address_enc: Option<Vec<u8>>,
}

pub async fn credit_subject(
    conn: &mut PgConnection,
    lead: Uuid,
) -> Result<CreditSubject, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_as(
        "select first_name, last_name, ssn_enc, date_of_birth_enc, address_enc from leads where id = $1",
    )
    .bind(lead)
    .fetch_one(conn)
    .await
}
