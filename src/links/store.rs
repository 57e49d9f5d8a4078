//! The only code that runs SQL on `upload_links` (the HTTP routes' own reads are still
//! being moved here: docs/architecture.md).

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

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
