//! The only code that runs SQL on `upload_links`.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::ReadScope;

/// A link's rules in SQL, handed to `$then!` as three string literals (a compile-checked
/// statement takes only literals, so the rules cannot be a `String` spliced in):
/// - the number of files that use up the link's `max_files` — not rejected by the pipeline
///   or the agent, not expired, not deleted, so a borrower can replace a rejected file;
/// - "the link still takes files" at `now()`, and at the statement's `$1`: not revoked,
///   unexpired, not used up — what a link's page answers 410 for otherwise.
///
/// Each is written for the upload link aliased `u`. The three texts are the one statement of
/// the rules: keep them equal.
macro_rules! link_rules_sql {
    ($then:ident) => {
        $then!(
            "(select count(*) from documents d where d.upload_link_id = u.id
                 and d.state not in ('rejected', 'expired', 'deleted')
                 and d.review_decision is distinct from 'reject')",
            "(u.revoked_at is null and u.expires_at > now()
              and (select count(*) from documents d where d.upload_link_id = u.id
                      and d.state not in ('rejected', 'expired', 'deleted')
                      and d.review_decision is distinct from 'reject') < u.max_files)",
            "(u.revoked_at is null and u.expires_at > $1
              and (select count(*) from documents d where d.upload_link_id = u.id
                      and d.state not in ('rejected', 'expired', 'deleted')
                      and d.review_decision is distinct from 'reject') < u.max_files)"
        )
    };
}
pub(crate) use link_rules_sql;

/// Lock the link behind `token_hash` until the caller's transaction ends.
pub async fn lock_by_token(conn: &mut PgConnection, token_hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"select 1 as "locked!" from upload_links where token_hash = $1 for update"#,
        token_hash
    )
    .fetch_all(conn)
    .await?;
    Ok(())
}

#[derive(Debug)]
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
    pub language: Option<String>,
}

/// The link behind `token_hash`, whatever its state.
pub async fn by_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<LinkLookup>, sqlx::Error> {
    macro_rules! statement {
        ($files_accepted:tt, $takes_files_now:tt, $takes_files_at_1:tt) => {
            sqlx::query_as!(
                LinkLookup,
                r#"select u.id, u.loan_id, u.lead_id, u.max_files, u.expires_at, u.revoked_at,
                          "#
                    + $files_accepted
                    + r#" as "files_accepted!",
                          coalesce(a.display_name, u.created_by) as "agent!", u.language
                     from upload_links u left join agents a on a.subject = u.created_by
                    where u.token_hash = $1"#,
                token_hash
            )
        };
    }
    link_rules_sql!(statement).fetch_optional(conn).await
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
    pub language: Option<&'a str>,
}

pub async fn insert(conn: &mut PgConnection, link: &NewLinkRow<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!("insert into upload_links (id, loan_id, lead_id, token_hash, borrower_email_enc, expires_at, max_files, created_by, token_enc, language)
         values ($1, $2, $3, $4, $5, now() + make_interval(hours => $6), $7, $8, $9, $10)", link.id, link.loan_id, link.lead_id, link.token_hash, link.borrower_email_enc, link.hours as i32, link.max_files as i32, link.created_by, link.token_enc, link.language)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug)]
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
    pub language: Option<String>,
}

/// `query_as!` into a [`LinkRow`] (`from upload_links u join loans o`) followed by `$tail`.
macro_rules! select_link {
    ($tail:tt $(, $arg:expr)* $(,)?) => {{
        macro_rules! statement {
            ($files_accepted:tt, $takes_files_now:tt, $takes_files_at_1:tt) => {
                sqlx::query_as!(
                    LinkRow,
                    r#"select u.id, u.loan_id, u.lead_id, u.borrower_email_enc, u.expires_at,
                              u.max_files, u.revoked_at, "# + $files_accepted + r#" as "files_accepted!",
                              o.owner_subject, o.team, u.language
                         from upload_links u join loans o on o.id = u.loan_id "# + $tail
                    $(, $arg)*
                )
            };
        }
        link_rules_sql!(statement)
    }};
}

pub async fn fetch(conn: &mut PgConnection, id: Uuid) -> Result<LinkRow, sqlx::Error> {
    select_link!("where u.id = $1", id).fetch_one(conn).await
}

/// Up to `fetch` links of a loan, newest first, before `before`.
pub async fn loan_page(
    conn: &mut PgConnection,
    loan: Uuid,
    before: Option<Uuid>,
    fetch: i64,
) -> Result<Vec<LinkRow>, sqlx::Error> {
    select_link!(
        "where u.loan_id = $1 and ($2::uuid is null or u.id < $2) order by u.id desc limit $3",
        loan,
        before,
        fetch
    )
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
    let (owner, team) = (scope.owner(), scope.team());
    if lock {
        sqlx::query_scalar!(
            "select u.lead_id from upload_links u join loans o on o.id = u.loan_id
               join leads l on l.id = u.lead_id and l.disposed_at is null
              where u.id = $1
                and ($2::text is null or o.owner_subject = $2) and ($3::text is null or o.team = $3)
              for update of u",
            id,
            owner,
            team
        )
        .fetch_optional(tx)
        .await
    } else {
        sqlx::query_scalar!(
            "select u.lead_id from upload_links u join loans o on o.id = u.loan_id
               join leads l on l.id = u.lead_id and l.disposed_at is null
              where u.id = $1
                and ($2::text is null or o.owner_subject = $2) and ($3::text is null or o.team = $3)",
            id,
            owner,
            team
        )
        .fetch_optional(tx)
        .await
    }
}

/// Revoke the link (idempotent); its sealed token goes with it: nothing can send it again.
pub async fn revoke(tx: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("update upload_links set revoked_at = coalesce(revoked_at, now()), token_enc = null where id = $1", id)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn forget_expired_tokens(db: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!("update upload_links set token_enc = null where token_enc is not null and expires_at <= now()")
    .execute(db)
    .await?
    .rows_affected())
}

/// Disposal (docs/operations/retention.md): every link of the file `lead` is revoked and
/// loses its recipient and sealed token.
pub async fn blank_for_disposal(
    tx: &mut PgConnection,
    leads: &[Uuid],
    at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update upload_links set borrower_email_enc = null, token_enc = null,
                revoked_at = coalesce(revoked_at, $2)
          where lead_id = any($1)",
        leads,
        at
    )
    .execute(tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    macro_rules! texts {
        ($files_accepted:tt, $takes_files_now:tt, $takes_files_at_1:tt) => {
            ($files_accepted, $takes_files_now, $takes_files_at_1)
        };
    }

    fn words(sql: &str) -> String {
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn the_three_link_rules_say_the_same() {
        let (files_accepted, now, at_1) = link_rules_sql!(texts);
        // The two "still takes files" rules differ only in their clock …
        assert_eq!(words(now).replace("now()", "$1"), words(at_1));
        // … and "still takes files" counts files exactly as `files_accepted` does.
        assert!(
            words(now).contains(&format!("{} < u.max_files", words(files_accepted))),
            "{now}"
        );
    }
}
