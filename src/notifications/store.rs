//! The only code that runs SQL on `notifications` and `unsubscribe_tokens`, and the
//! notifier's read model across the other aggregates (docs/architecture.md).

use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// The lead an unsubscribe token belongs to.
pub async fn lead_of_unsubscribe_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "select lead_id from unsubscribe_tokens where token_hash = $1",
        token_hash
    )
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
    pub state: super::NotificationState,
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
    sqlx::query_as!(
        NotificationRow,
        "select id, lead_id, channel, template, recipient_kind, recipient_enc, state, attempts,
                last_error, created_at, sent_at
           from notifications where loan_id = $1 and ($2::uuid is null or id < $2)
          order by id desc limit $3",
        loan,
        before,
        fetch
    )
    .fetch_all(conn)
    .await
}

/// Take the reminder round's advisory lock for this transaction; false when another replica
/// holds it.
pub async fn try_round_lock(tx: &mut PgConnection, key: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(r#"select pg_try_advisory_xact_lock($1) as "locked!""#, key)
        .fetch_one(tx)
        .await
}

/// A request a reminder round considers: its loan, the reminders sent and when the next one
/// falls due.
pub struct DueReminder {
    pub id: Uuid,
    pub loan_id: Uuid,
    pub reminders_sent: i32,
    pub due_at: OffsetDateTime,
}

/// The requests a reminder round considers, locked (skipping those another round holds),
/// by loan. A read across
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
) -> Result<Vec<DueReminder>, sqlx::Error> {
    macro_rules! statement {
        ($files_accepted:tt, $takes_files_now:tt, $takes_files_at_1:tt) => {
            sqlx::query_as!(
                DueReminder,
                r#"select r.id, r.loan_id, r.reminders_sent,
                          case when r.reminders_sent = 0 then r.created_at + $2
                               else r.last_reminded_at + $3 end as "due_at!"
                     from document_requests r
                     join loans o on o.id = r.loan_id
                     join leads l on l.id = r.lead_id
                    where r.state in ('outstanding', 'rejected')
                      and o.status not in ('closed', 'denied', 'withdrawn')
                      and r.reminders_sent < $4
                      and l.email_opted_out_at is null
                      and exists (select 1 from upload_links u
                                   where u.loan_id = r.loan_id and u.token_enc is not null
                                     and "#
                    + $takes_files_at_1
                    + r#")
                      and case when r.reminders_sent = 0 then r.created_at + $2
                               else r.last_reminded_at + $3 end <= $1 + $5
                    order by r.loan_id, r.id
                    for update of r skip locked"#,
                now,
                // `time::Duration`s: sqlx encodes them as intervals, the macros only know
                // `PgInterval` as the parameters' type.
                first as _,
                every as _,
                max,
                window as _
            )
        };
    }
    crate::links::link_rules_sql!(statement).fetch_all(tx).await
}

// What the notifier reads about the event's subject. A read model across the aggregates:
// a store writes only its own tables, and may read others' (docs/architecture.md).

/// The lead's newest loan (a credit pull's news goes to its agent).
pub async fn newest_loan_of_lead(
    db: impl PgExecutor<'_>,
    lead: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "select id from loans where lead_id = $1 order by id desc limit 1",
        lead
    )
    .fetch_optional(db)
    .await
}

/// A new link's sealed recipient, sealed token and expiry.
pub struct LinkInvitation {
    pub borrower_email_enc: Option<Vec<u8>>,
    pub token_enc: Option<Vec<u8>>,
    pub expires_at: OffsetDateTime,
    pub language: crate::domain::Language,
}

/// A link's row before its language is known to be one of ours.
struct InvitationRow {
    borrower_email_enc: Option<Vec<u8>>,
    token_enc: Option<Vec<u8>>,
    expires_at: OffsetDateTime,
    language: Option<String>,
}

pub async fn link_invitation(
    db: impl PgExecutor<'_>,
    link: Uuid,
) -> Result<Option<LinkInvitation>, sqlx::Error> {
    let row = sqlx::query_as!(
        InvitationRow,
        "select borrower_email_enc, token_enc, expires_at, language from upload_links where id = $1",
        link
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| LinkInvitation {
        borrower_email_enc: r.borrower_email_enc,
        token_enc: r.token_enc,
        expires_at: r.expires_at,
        language: r
            .language
            .as_deref()
            .and_then(crate::domain::Language::parse)
            .unwrap_or(crate::domain::Language::En),
    }))
}

/// The language of the loan's newest link that was given one: the borrower's emails
/// about the loan follow it.
pub async fn borrower_language(
    db: impl PgExecutor<'_>,
    loan: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "select language from upload_links
          where loan_id = $1 and language is not null
          order by id desc limit 1",
        loan
    )
    .fetch_optional(db)
    .await
    .map(Option::flatten)
}

/// A rejected document's type, sealed reason and the link it came through.
pub struct RejectedDocument {
    pub doc_type: String,
    pub review_reason_enc: Option<Vec<u8>>,
    pub upload_link_id: Option<Uuid>,
}

pub async fn rejected_document(
    db: impl PgExecutor<'_>,
    document: Uuid,
) -> Result<Option<RejectedDocument>, sqlx::Error> {
    sqlx::query_as!(
        RejectedDocument,
        "select doc_type, review_reason_enc, upload_link_id from documents where id = $1",
        document
    )
    .fetch_optional(db)
    .await
}

/// A message to one recipient about one event, recorded before it is sent.
pub struct NewNotification<'a> {
    pub id: Uuid,
    pub source_message_id: Uuid,
    pub recipient_kind: &'a str,
    pub channel: &'a str,
    pub template: &'a str,
    pub loan: Uuid,
    pub lead: Uuid,
    pub recipient_enc: &'a [u8],
}

/// A notification as recorded: what an earlier delivery of its event did.
pub struct Recorded {
    pub id: Uuid,
    pub state: super::NotificationState,
    pub last_error: Option<String>,
}

/// Record the notification once per (event, recipient kind, channel) and answer the
/// recorded one — a redelivery finds what the first delivery did.
pub async fn record_once(
    db: &sqlx::PgPool,
    n: &NewNotification<'_>,
) -> Result<Recorded, sqlx::Error> {
    sqlx::query!("insert into notifications (id, source_message_id, recipient_kind, channel, template, loan_id, lead_id, recipient_enc)
         values ($1, $2, $3, $8, $4, $5, $6, $7)
         on conflict (source_message_id, recipient_kind, channel) do nothing", n.id, n.source_message_id, n.recipient_kind, n.template, n.loan, n.lead, n.recipient_enc, n.channel)
    .execute(db)
    .await?;
    sqlx::query_as!(
        Recorded,
        "select id, state, last_error from notifications
          where source_message_id = $1 and recipient_kind = $2 and channel = $3",
        n.source_message_id,
        n.recipient_kind,
        n.channel
    )
    .fetch_one(db)
    .await
}

pub async fn requeue(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update notifications set state = 'queued' where id = $1 and state = 'failed'",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn sent(
    db: impl PgExecutor<'_>,
    id: Uuid,
    provider_message_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!("update notifications set state = 'sent', attempts = attempts + 1, provider_message_id = $2,
                sent_at = now(), last_error = null where id = $1", id, provider_message_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Refused for good by the provider.
pub async fn refused(db: impl PgExecutor<'_>, id: Uuid, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("update notifications set state = 'failed', attempts = attempts + 1, last_error = $2 where id = $1", id, reason)
        .execute(db)
        .await?;
    Ok(())
}

/// A failed attempt that will be retried.
pub async fn attempt_failed(
    db: impl PgExecutor<'_>,
    id: Uuid,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update notifications set attempts = attempts + 1, last_error = $2 where id = $1",
        id,
        reason
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The event ran out of retries: its still-queued notifications failed.
pub async fn exhausted(
    tx: &mut PgConnection,
    source_message_id: Uuid,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!("update notifications set state = 'failed', last_error = $2 where source_message_id = $1 and state = 'queued'", source_message_id, reason)
    .execute(tx)
    .await?;
    Ok(())
}

/// Who a loan belongs to: its borrower (lead, first name, sealed email) and its agent.
pub struct LoanPeople {
    pub lead_id: Uuid,
    pub first_name: String,
    pub email_enc: Option<Vec<u8>>,
    pub agent_name: String,
    pub agent_email: Option<String>,
}

pub async fn people(
    db: impl PgExecutor<'_>,
    loan: Uuid,
) -> Result<Option<LoanPeople>, sqlx::Error> {
    sqlx::query_as!(
        LoanPeople,
        r#"select l.id as lead_id, l.first_name, l.email_enc,
                  coalesce(a.display_name, o.owner_subject) as "agent_name!",
                  a.email as "agent_email?"
             from loans o join leads l on l.id = o.lead_id
             left join agents a on a.subject = o.owner_subject
            where o.id = $1"#,
        loan
    )
    .fetch_optional(db)
    .await
}

/// A link with a recipient: its sealed token and sealed recipient address.
pub struct EmailedLink {
    pub id: Uuid,
    pub token_enc: Vec<u8>,
    pub borrower_email_enc: Vec<u8>,
}

/// The loan's live links that have a recipient, newest first.
pub async fn live_emailed_links(
    db: impl PgExecutor<'_>,
    loan: Uuid,
) -> Result<Vec<EmailedLink>, sqlx::Error> {
    sqlx::query_as!(
        EmailedLink,
        r#"select id, token_enc as "token_enc!", borrower_email_enc as "borrower_email_enc!"
             from upload_links
            where loan_id = $1 and token_enc is not null and borrower_email_enc is not null
              and revoked_at is null and expires_at > now()
            order by id desc limit 20"#,
        loan
    )
    .fetch_all(db)
    .await
}

/// A link's sealed recipient address and, while it lives, its sealed token.
pub struct LinkRecipient {
    pub borrower_email_enc: Option<Vec<u8>>,
    pub live_token_enc: Option<Vec<u8>>,
}

pub async fn link_recipient(
    db: impl PgExecutor<'_>,
    link: Uuid,
) -> Result<Option<LinkRecipient>, sqlx::Error> {
    sqlx::query_as!(
        LinkRecipient,
        "select borrower_email_enc,
                case when revoked_at is null and expires_at > now() then token_enc end
                    as live_token_enc
           from upload_links where id = $1",
        link
    )
    .fetch_optional(db)
    .await
}

/// The borrower's sealed phone, only with a current SMS opt-in.
pub async fn sms_phone(
    db: impl PgExecutor<'_>,
    lead: Uuid,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let row: Option<Option<Vec<u8>>> = sqlx::query_scalar!("select phone_enc from leads where id = $1 and sms_consent_at is not null and sms_opted_out_at is null", lead)
    .fetch_optional(db)
    .await?;
    Ok(row.flatten())
}

pub async fn email_opted_out(db: impl PgExecutor<'_>, lead: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select email_opted_out_at is not null as "opted_out!" from leads where id = $1"#,
        lead
    )
    .fetch_one(db)
    .await
}

/// The document types of those of `requests` (of `loan`) still waiting on the borrower,
/// for a reminder's text.
pub async fn still_needed(
    db: impl PgExecutor<'_>,
    requests: &[Uuid],
    loan: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select replace(doc_type, '_', ' ') as "doc_type!" from document_requests
            where id = any($1) and loan_id = $2 and state in ('outstanding', 'rejected')
            order by id"#,
        requests,
        loan
    )
    .fetch_all(db)
    .await
}

/// The loan's newest link that can still take the borrower's files and has a recipient.
pub async fn reminder_link(
    db: impl PgExecutor<'_>,
    loan: Uuid,
) -> Result<Option<EmailedLink>, sqlx::Error> {
    macro_rules! statement {
        ($files_accepted:tt, $takes_files_now:tt, $takes_files_at_1:tt) => {
            sqlx::query_as!(
                EmailedLink,
                r#"select u.id, u.token_enc as "token_enc!",
                          u.borrower_email_enc as "borrower_email_enc!"
                     from upload_links u
                    where u.loan_id = $1 and u.token_enc is not null
                      and u.borrower_email_enc is not null
                      and "#
                    + $takes_files_now
                    + r#"
                    order by u.id desc limit 1"#,
                loan
            )
        };
    }
    crate::links::link_rules_sql!(statement)
        .fetch_optional(db)
        .await
}

/// Keep an unsubscribe token (its hash only) for the lead.
pub async fn insert_unsubscribe_token(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
    lead: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into unsubscribe_tokens (token_hash, lead_id) values ($1, $2)",
        token_hash,
        lead
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Disposal (docs/operations/retention.md): the file's notifications keep their channel,
/// template, state and dates; the sealed recipient goes, and so do unsubscribe tokens.
pub async fn blank_for_disposal(tx: &mut PgConnection, leads: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update notifications set recipient_enc = '\\x', last_error = null,
                disposed_at = coalesce(disposed_at, now())
          where lead_id = any($1)",
        leads
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "delete from unsubscribe_tokens where lead_id = any($1)",
        leads
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Record-level disposal: the sealed recipients (and provider errors, which can quote an
/// address) of up to `limit` notifications created more than `days` before `at`, of files
/// no legal hold keeps, go; how many.
pub async fn dispose_sent(
    conn: &mut PgConnection,
    at: OffsetDateTime,
    days: i32,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "update notifications set recipient_enc = '\\x', last_error = null, disposed_at = $1
          where id in (
            select n.id from notifications n
             where n.disposed_at is null
               and n.created_at < $1::timestamptz - make_interval(days => $2)
               and n.state in ('sent', 'failed')
               and not exists (select 1 from legal_holds h
                                where h.lead_id = n.lead_id and h.lifted_at is null)
             order by n.created_at limit $3
             for update skip locked)",
        at,
        days,
        limit
    )
    .execute(conn)
    .await?
    .rows_affected())
}
