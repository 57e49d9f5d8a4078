//! The only code that runs SQL on `leads`.

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{LeadOwner, LeadStatus, LoanPurpose, ValidLead};
use crate::auth::ReadScope;

#[derive(Debug)]
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

/// `query_as!` into a [`LeadRow`]: the lead's columns (`from leads l left join agents a`)
/// followed by `$tail` — one column list, every statement still checked at compile time.
macro_rules! select_lead {
    ($first:tt $(+ $tail:tt)* $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            LeadRow,
            "select l.id, l.owner_subject, a.display_name as owner_name, l.team,
                    l.first_name, l.last_name, l.email_enc, l.phone_enc, l.ssn_enc,
                    l.date_of_birth_enc, l.annual_income_enc, l.address_enc, l.notes_enc,
                    l.loan_purpose, l.source, l.status, l.version, l.created_at, l.updated_at
               from leads l left join agents a on a.subject = l.owner_subject " + $first $(+ $tail)*
            $(, $arg)*
        )
    };
}

/// One lead within `scope` (`for_update` locks it for a change).
pub async fn fetch(
    db: &mut PgConnection,
    id: Uuid,
    scope: &ReadScope,
    for_update: bool,
) -> Result<Option<LeadRow>, sqlx::Error> {
    let (owner, team) = (scope.owner(), scope.team());
    if for_update {
        select_lead!(
            "where l.id = $1 and ($2::text is null or l.owner_subject = $2)
                and ($3::text is null or l.team = $3) and l.disposed_at is null
             for update of l",
            id,
            owner,
            team
        )
        .fetch_optional(db)
        .await
    } else {
        select_lead!(
            "where l.id = $1 and ($2::text is null or l.owner_subject = $2)
                and ($3::text is null or l.team = $3) and l.disposed_at is null",
            id,
            owner,
            team
        )
        .fetch_optional(db)
        .await
    }
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

pub async fn insert(
    tx: &mut PgConnection,
    id: Uuid,
    lead: &ValidLead,
    sealed: &SealedLead,
    owner_subject: &str,
    team: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into leads (id, first_name, last_name, email_enc, phone_enc, ssn_enc, ssn_index,
                            date_of_birth_enc, annual_income_enc, address_enc, notes_enc,
                            loan_purpose, source, status, owner_subject, team)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        id,
        lead.first_name,
        lead.last_name,
        sealed.email,
        sealed.phone,
        sealed.ssn,
        sealed.ssn_index,
        sealed.dob,
        sealed.income,
        sealed.address,
        sealed.notes,
        lead.loan_purpose.map(LoanPurpose::as_str),
        lead.source,
        lead.status as LeadStatus,
        owner_subject,
        team,
    )
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
    sqlx::query!(
        "update leads set first_name = $2, last_name = $3, email_enc = $4, phone_enc = $5,
                ssn_enc = $6, ssn_index = $7, date_of_birth_enc = $8, annual_income_enc = $9,
                address_enc = $10, notes_enc = $11, loan_purpose = $12, source = $13, status = $14,
                version = version + 1, updated_at = now()
          where id = $1",
        id,
        lead.first_name,
        lead.last_name,
        sealed.email,
        sealed.phone,
        sealed.ssn,
        sealed.ssn_index,
        sealed.dob,
        sealed.income,
        sealed.address,
        sealed.notes,
        lead.loan_purpose.map(LoanPurpose::as_str),
        lead.source,
        lead.status as LeadStatus,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// A lead whose SSN's blind index matched, with its sealed SSN for the caller to decrypt.
pub struct SsnCandidate {
    pub id: Uuid,
    pub ssn_enc: Option<Vec<u8>>,
}

/// Leads within `scope` other than `id` whose SSN has the blind index `index` (at most
/// 200; the caller decrypts to decide).
pub async fn ssn_candidates(
    db: &PgPool,
    index: i32,
    id: Uuid,
    scope: &ReadScope,
) -> Result<Vec<SsnCandidate>, sqlx::Error> {
    sqlx::query_as!(
        SsnCandidate,
        "select l.id, l.ssn_enc from leads l
          where l.ssn_index = $1 and l.id <> $2
            and ($3::text is null or l.owner_subject = $3) and ($4::text is null or l.team = $4)
          limit 200",
        index,
        id,
        scope.owner(),
        scope.team(),
    )
    .fetch_all(db)
    .await
}

/// The list's filters, already validated.
pub struct ListFilter {
    pub status: Option<LeadStatus>,
    /// A `like` pattern, lower case, with the caller's `%`, `_` and `\` escaped.
    pub name_pattern: Option<String>,
    pub created_after: Option<OffsetDateTime>,
    pub before: Option<Uuid>,
}

/// The list's statement with the scope's condition (`$6`) spliced in: the filters are
/// nullable parameters (the plan walks the primary key backwards whatever they are), the
/// scope is one static statement per variant (its plan does depend on it).
macro_rules! list_leads {
    ($scope:tt, $filter:expr, $fetch:expr $(, $scope_arg:expr)?) => {
        select_lead!(
            "where ($1::text is null or l.status = $1)
               and ($2::text is null or lower(l.first_name) like $2 or lower(l.last_name) like $2
                    or lower(l.first_name || ' ' || l.last_name) like $2)
               and ($3::timestamptz is null or l.created_at > $3)
               and ($4::uuid is null or l.id < $4) and l.disposed_at is null" + $scope + "
             order by l.id desc limit $5",
            $filter.status as Option<LeadStatus>,
            $filter.name_pattern,
            $filter.created_after,
            $filter.before,
            $fetch
            $(, $scope_arg)?
        )
    };
}

/// Up to `fetch` leads within `scope`, newest first.
pub async fn list(
    db: &PgPool,
    scope: &ReadScope,
    filter: &ListFilter,
    fetch: i64,
) -> Result<Vec<LeadRow>, sqlx::Error> {
    match scope {
        ReadScope::Own(subject) => {
            list_leads!(" and l.owner_subject = $6", filter, fetch, subject)
                .fetch_all(db)
                .await
        }
        ReadScope::Team(team) => {
            list_leads!(" and l.team = $6", filter, fetch, team)
                .fetch_all(db)
                .await
        }
        ReadScope::All => list_leads!("", filter, fetch).fetch_all(db).await,
    }
}

/// The owner and team of a lead within `scope`, locked against deletion (`for share`) for
/// the rest of the caller's transaction.
pub async fn owner_for_share(
    tx: &mut PgConnection,
    lead: Uuid,
    scope: &ReadScope,
) -> Result<Option<LeadOwner>, sqlx::Error> {
    sqlx::query_as!(
        LeadOwner,
        "select l.owner_subject, l.team from leads l
          where l.id = $1 and l.disposed_at is null
            and ($2::text is null or l.owner_subject = $2) and ($3::text is null or l.team = $3)
          for share",
        lead,
        scope.owner(),
        scope.team(),
    )
    .fetch_optional(tx)
    .await
}

/// Whether the lead exists within `scope`.
pub async fn in_scope(
    conn: &mut PgConnection,
    lead: Uuid,
    scope: &ReadScope,
) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!(
        "select 1 as \"found!\" from leads l
          where l.id = $1 and l.disposed_at is null
            and ($2::text is null or l.owner_subject = $2) and ($3::text is null or l.team = $3)",
        lead,
        scope.owner(),
        scope.team(),
    )
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

/// Whether the lead carries what a credit pull needs (SSN, date of birth, address); `None`
/// when there is no such lead.
pub async fn subject_complete(
    conn: &mut PgConnection,
    lead: Uuid,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar!(
        "select ssn_enc is not null and date_of_birth_enc is not null and address_enc is not null
                as \"complete!\"
           from leads where id = $1",
        lead,
    )
    .fetch_optional(conn)
    .await
}

/// The lead's sealed email address (`None` when it has none; an error when there is no
/// such lead).
pub async fn email_enc(
    conn: &mut PgConnection,
    lead: Uuid,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar!("select email_enc from leads where id = $1", lead)
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
    sqlx::query!(
        "update leads set sms_consent_at = $2, sms_consent_method = $3, sms_consent_by = $4,
                sms_opted_out_at = null, updated_at = now() where id = $1",
        lead,
        obtained_at,
        method,
        by,
    )
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn set_sms_opted_out(tx: &mut PgConnection, lead: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update leads set sms_opted_out_at = now(), updated_at = now() where id = $1",
        lead
    )
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn email_opted_out(conn: &mut PgConnection, lead: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        "select email_opted_out_at is not null as \"opted_out!\" from leads where id = $1",
        lead
    )
    .fetch_one(conn)
    .await
}

pub async fn set_email_opted_out(tx: &mut PgConnection, lead: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update leads set email_opted_out_at = now() where id = $1 and email_opted_out_at is null",
        lead
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// What a credit pull sends the bureau, as stored: the names, and the sealed SSN, date of
/// birth and address.
#[derive(Debug)]
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
    sqlx::query_as!(
        CreditSubject,
        "select first_name, last_name, ssn_enc, date_of_birth_enc, address_enc from leads where id = $1",
        lead,
    )
    .fetch_one(conn)
    .await
}

/// Lock the leads of `leads` not yet disposed for their disposal (in id order, so two
/// lockers never deadlock); the ones locked.
pub async fn lock_for_disposal(
    tx: &mut PgConnection,
    leads: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "select id from leads where id = any($1) and disposed_at is null order by id for update",
        leads
    )
    .fetch_all(tx)
    .await
}

/// Disposal (docs/operations/retention.md): blank the lead's clear-text names, drop every
/// sealed field, the SSN's blind index and the credit reports' contents; ids, states and
/// dates stay.
pub async fn blank_for_disposal(
    tx: &mut PgConnection,
    leads: &[Uuid],
    at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update leads set first_name = '', last_name = '', email_enc = null, phone_enc = null,
                ssn_enc = null, ssn_index = null, date_of_birth_enc = null,
                annual_income_enc = null, address_enc = null, notes_enc = null, source = null,
                disposed_at = $2, version = version + 1
          where id = any($1)",
        leads,
        at
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update credit_reports set consent_ip_enc = null, report_enc = null, score = null,
                bureau_report_id = null
          where lead_id = any($1)",
        leads
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
