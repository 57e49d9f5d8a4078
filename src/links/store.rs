//! The only code that runs SQL on `upload_links` (the HTTP routes' own reads are still
//! being moved here: docs/architecture.md).

use sqlx::{PgConnection, Postgres, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::ReadScope;
use crate::db::push_scope;

/// The files that use up a link's `max_files`: not rejected by the pipeline or the agent,
/// not expired, not deleted — so a borrower can replace a rejected file.
/// SQL condition: the upload link `u` still takes files at `now` (an SQL expression) — not
/// revoked, unexpired, not used up; what `active_link` answers 410 for otherwise.
pub fn link_takes_files(now: &str) -> String {
    format!(
        "u.revoked_at is null and u.expires_at > {now}
         and (select count(*) from documents d where d.upload_link_id = u.id and {COUNTS_AGAINST_LINK}) < u.max_files"
    )
}

pub const COUNTS_AGAINST_LINK: &str = "d.state not in ('rejected', 'expired', 'deleted') and d.review_decision is distinct from 'reject'";

/// Lock the link behind `token_hash` until the caller's transaction ends.
pub async fn lock_by_token(conn: &mut PgConnection, token_hash: &[u8]) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query("select 1 from upload_links where token_hash = $1 for update")
        .bind(token_hash)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
pub struct LinkLookup {
    pub id: Uuid,
    pub loan_id: Uuid,
    pub lead_id: Uuid,
    pub max_files: i32,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub files_accepted: i64,
    /// The agent who made the link, by display name.
    pub agent: String,
}

/// The link behind `token_hash`, whatever its state.
pub async fn by_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<LinkLookup>, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select l.id, l.loan_id, l.lead_id, l.max_files, l.expires_at, l.revoked_at,
                (select count(*) from documents d where d.upload_link_id = l.id and {COUNTS_AGAINST_LINK}) as files_accepted,
                coalesce(a.display_name, l.created_by) as agent
           from upload_links l left join agents a on a.subject = l.created_by
          where l.token_hash = $1"
    )))
    .bind(token_hash)
    .fetch_optional(conn)
    .await
}

/// A new link's row (the recipient and the token sealed by the caller).
pub struct NewLinkRow<'a> {
    pub id: Uuid,
    pub loan_id: Uuid,
    pub lead_id: Uuid,
    pub token_hash: &'a [u8],
    pub borrower_email_enc: Option<&'a [u8]>,
    pub hours: u32,
    pub max_files: u32,
    pub created_by: &'a str,
    pub token_enc: Option<&'a [u8]>,
}

pub async fn insert(conn: &mut PgConnection, link: &NewLinkRow<'_>) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query(
        "insert into upload_links (id, loan_id, lead_id, token_hash, borrower_email_enc, expires_at, max_files, created_by, token_enc)
         values ($1, $2, $3, $4, $5, now() + make_interval(hours => $6), $7, $8, $9)",
    )
    .bind(link.id)
    .bind(link.loan_id)
    .bind(link.lead_id)
    .bind(link.token_hash)
    .bind(link.borrower_email_enc)
    .bind(link.hours as i32)
    .bind(link.max_files as i32)
    .bind(link.created_by)
    .bind(link.token_enc)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
pub struct LinkRow {
    pub id: Uuid,
    pub loan_id: Uuid,
    pub lead_id: Uuid,
    pub borrower_email_enc: Option<Vec<u8>>,
    pub expires_at: OffsetDateTime,
    pub max_files: i32,
    pub revoked_at: Option<OffsetDateTime>,
    pub files_accepted: i64,
    /// The loan's owner and team: whom the recipient is masked for.
    pub owner_subject: String,
    pub team: Option<String>,
}

fn select_link() -> String {
    format!(
        "select id, loan_id, lead_id, borrower_email_enc, expires_at, max_files, revoked_at,
                (select count(*) from documents d where d.upload_link_id = l.id and {COUNTS_AGAINST_LINK}) as files_accepted,
                (select o.owner_subject from loans o where o.id = l.loan_id) as owner_subject,
                (select o.team from loans o where o.id = l.loan_id) as team
           from upload_links l"
    )
}

pub async fn fetch(conn: &mut PgConnection, id: Uuid) -> Result<LinkRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{} where id = $1",
        select_link()
    )))
    .bind(id)
    .fetch_one(conn)
    .await
}

/// Up to `fetch` links of a loan, newest first, before `before`.
pub async fn loan_page(
    conn: &mut PgConnection,
    loan: Uuid,
    before: Option<Uuid>,
    fetch: i64,
) -> Result<Vec<LinkRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{} where loan_id = $1 and ($2::uuid is null or id < $2) order by id desc limit $3",
        select_link()
    )))
    .bind(loan)
    .bind(before)
    .bind(fetch)
    .fetch_all(conn)
    .await
}

/// The lead of a link whose loan is within `scope` (`lock` locks the link).
pub async fn lead_in_scope(
    tx: &mut PgConnection,
    id: Uuid,
    scope: &ReadScope,
    lock: bool,
) -> Result<Option<Uuid>, sqlx::Error> {
    let mut query = QueryBuilder::<Postgres>::new(
        "select l.lead_id from upload_links l join loans o on o.id = l.loan_id where l.id = ",
    );
    query.push_bind(id);
    push_scope(&mut query, "o", scope);
    if lock {
        query.push(" for update of l");
    }
    query.build_query_scalar().fetch_optional(tx).await
}

/// Revoke the link (idempotent); its sealed token goes with it: nothing can send it again.
pub async fn revoke(tx: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    // language=PostgreSQL
    sqlx::query(
        "update upload_links set revoked_at = coalesce(revoked_at, now()), token_enc = null where id = $1",
    )
    .bind(id)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn forget_expired_tokens(db: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    // language=PostgreSQL
    Ok(sqlx::query(
        "update upload_links set token_enc = null where token_enc is not null and expires_at <= now()",
    )
    .execute(db)
    .await?
    .rows_affected())
}
