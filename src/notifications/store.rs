//! The only code that runs SQL on `notifications` and `unsubscribe_tokens` (the notifier's
//! own statements are still being moved here: docs/architecture.md).

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

/// The lead an unsubscribe token belongs to.
pub async fn lead_of_unsubscribe_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<Uuid>, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_scalar("select lead_id from unsubscribe_tokens where token_hash = $1")
        .bind(token_hash)
        .fetch_optional(conn)
        .await
}

#[derive(Debug, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub channel: String,
    pub template: String,
    pub recipient_kind: String,
    pub recipient_enc: Vec<u8>,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
    pub sent_at: Option<OffsetDateTime>,
}

/// Up to `fetch` notifications about a loan, newest first, before `before`.
pub async fn loan_page(
    conn: &mut PgConnection,
    loan: Uuid,
    before: Option<Uuid>,
    fetch: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_as(
        "select id, lead_id, channel, template, recipient_kind, recipient_enc, state, attempts, last_error, created_at, sent_at
           from notifications where loan_id = $1 and ($2::uuid is null or id < $2)
          order by id desc limit $3",
    )
    .bind(loan)
    .bind(before)
    .bind(fetch)
    .fetch_all(conn)
    .await
}

/// Take the reminder round's advisory lock for this transaction; false when another replica
/// holds it.
pub async fn try_round_lock(tx: &mut PgConnection, key: i64) -> Result<bool, sqlx::Error> {
    // language=PostgreSQL
    sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
        .bind(key)
        .fetch_one(tx)
        .await
}

/// The requests a reminder round considers, locked (skipping those another round holds):
/// (request, loan, reminders sent, when the next one falls due), by loan. A read across
/// the needs list, the loan, the lead and its links: each request still waiting on the
/// borrower (`received`, `accepted` and `not_applicable` stop reminders; a rejected one asks
/// for a new file) of a loan still collecting documents, a borrower who has not opted out,
/// and a live emailed link (unexpired, unrevoked and not used up: it would answer 410);
/// those due by `now` + the digest window.
pub async fn due_reminders(
    tx: &mut PgConnection,
    now: OffsetDateTime,
    first: time::Duration,
    every: time::Duration,
    max: i32,
    window: time::Duration,
) -> Result<Vec<(Uuid, Uuid, i32, OffsetDateTime)>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        // language=PostgreSQL
        "select r.id, r.loan_id, r.reminders_sent,
                case when r.reminders_sent = 0 then r.created_at + $2 else r.last_reminded_at + $3 end as due_at
           from document_requests r
           join loans o on o.id = r.loan_id
           join leads l on l.id = r.lead_id
          where r.state in ('outstanding', 'rejected')
            and o.status not in ('closed', 'denied', 'withdrawn')
            and r.reminders_sent < $4
            and l.email_opted_out_at is null
            and exists (select 1 from upload_links u
                         where u.loan_id = r.loan_id and u.token_enc is not null
                           and {open})
            and case when r.reminders_sent = 0 then r.created_at + $2 else r.last_reminded_at + $3 end <= $1 + $5
          order by r.loan_id, r.id
          for update of r skip locked",
        open = crate::links::ops::link_takes_files("$1")
    )))
    .bind(now)
    .bind(first)
    .bind(every)
    .bind(max)
    .bind(window)
    .fetch_all(tx)
    .await
}
