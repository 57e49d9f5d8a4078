//! The only code that runs SQL on `credit_reports`.

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Consent, PullType};
use crate::auth::ReadScope;

/// A pull to queue, its consent's IP address already sealed.
pub struct QueuedPull<'a> {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub pull_type: PullType,
    pub consent: &'a Consent,
    pub ip_enc: Option<&'a [u8]>,
    pub requested_by: &'a str,
    /// `new`, `reissue` or `upgrade`.
    pub kind: &'a str,
    pub based_on: Option<Uuid>,
}

pub async fn insert_queued(
    tx: &mut PgConnection,
    pull: &QueuedPull<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!("insert into credit_reports (id, lead_id, pull_type, consent_obtained_at, consent_method,
                consent_text_version, consent_ip_enc, consent_obtained_by, request_kind, based_on, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $8)", pull.id, pull.lead_id, pull.pull_type.as_str(), pull.consent.obtained_at, pull.consent.method.as_str(), &pull.consent.text_version, pull.ip_enc, pull.requested_by, pull.kind, pull.based_on)
    .execute(tx)
    .await?;
    Ok(())
}

#[derive(Debug)]
pub struct PullRow {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub pull_type: String,
    pub request_kind: String,
    pub based_on: Option<Uuid>,
    pub status: super::PullState,
    pub score: Option<i32>,
    pub bureau: Option<String>,
    pub bureau_report_id: Option<String>,
    pub pulled_at: Option<OffsetDateTime>,
    pub failure_reason: Option<String>,
    pub created_at: OffsetDateTime,
    /// The lead's owner and team: whom the score is withheld from.
    pub owner_subject: String,
    pub team: Option<String>,
}

/// `query_as!` into a [`PullRow`]: the pull's columns and its lead's owner and team
/// (`from credit_reports c join leads l`) followed by `$tail`.
macro_rules! select_pull {
    ($tail:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            PullRow,
            "select c.id, c.lead_id, c.pull_type, c.request_kind, c.based_on, c.status,
                    c.score, c.bureau, c.bureau_report_id, c.pulled_at, c.failure_reason,
                    c.created_at, l.owner_subject, l.team
               from credit_reports c join leads l on l.id = c.lead_id and l.disposed_at is null " + $tail
            $(, $arg)*
        )
    };
}

/// One pull within `scope` (of its lead's owner and team).
pub async fn fetch(
    conn: &mut PgConnection,
    id: Uuid,
    scope: &ReadScope,
) -> Result<Option<PullRow>, sqlx::Error> {
    select_pull!(
        "where c.id = $1
            and ($2::text is null or l.owner_subject = $2) and ($3::text is null or l.team = $3)",
        id,
        scope.owner(),
        scope.team()
    )
    .fetch_optional(conn)
    .await
}

/// Up to `fetch` pulls of a lead, newest first, before `before` (the caller checked the
/// lead is visible).
pub async fn lead_page(
    conn: &mut PgConnection,
    lead: Uuid,
    before: Option<Uuid>,
    fetch: i64,
) -> Result<Vec<PullRow>, sqlx::Error> {
    select_pull!(
        "where c.lead_id = $1 and ($2::uuid is null or c.id < $2) order by c.id desc limit $3",
        lead,
        before,
        fetch
    )
    .fetch_all(conn)
    .await
}

/// The lead's latest pull within `scope`.
pub async fn latest(
    db: &PgPool,
    lead: Uuid,
    scope: &ReadScope,
) -> Result<Option<PullRow>, sqlx::Error> {
    select_pull!(
        "where c.lead_id = $1
            and ($2::text is null or l.owner_subject = $2) and ($3::text is null or l.team = $3)
          order by c.id desc limit 1",
        lead,
        scope.owner(),
        scope.team()
    )
    .fetch_optional(db)
    .await
}

/// A pull's sealed bureau report, once it is completed.
pub async fn report_enc(conn: &mut PgConnection, id: Uuid) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar!("select report_enc from credit_reports where id = $1", id)
        .fetch_one(conn)
        .await
}

/// The consent a pull rests on: when, how, which text.
pub struct ConsentRecord {
    pub consent_obtained_at: OffsetDateTime,
    pub consent_method: String,
    pub consent_text_version: String,
}

pub async fn consent_of(conn: &mut PgConnection, id: Uuid) -> Result<ConsentRecord, sqlx::Error> {
    sqlx::query_as!(
        ConsentRecord,
        "select consent_obtained_at, consent_method, consent_text_version
           from credit_reports where id = $1",
        id
    )
    .fetch_one(conn)
    .await
}

/// What the worker needs of a pull, the row locked.
#[derive(Debug)]
pub struct WorkRow {
    pub lead_id: Uuid,
    pub status: super::PullState,
    pub pull_type: String,
    pub request_kind: String,
    pub based_on: Option<Uuid>,
}

pub async fn for_work(tx: &mut PgConnection, id: Uuid) -> Result<Option<WorkRow>, sqlx::Error> {
    sqlx::query_as!(
        WorkRow,
        "select c.lead_id, c.status, c.pull_type, c.request_kind, c.based_on
           from credit_reports c where c.id = $1 for update",
        id
    )
    .fetch_optional(tx)
    .await
}

/// The bureau's id of an earlier pull's report (what a reissue or upgrade refers to).
pub async fn bureau_report_id(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "select bureau_report_id from credit_reports where id = $1",
        id
    )
    .fetch_one(conn)
    .await
}

pub async fn count_attempt(tx: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update credit_reports set attempts = attempts + 1 where id = $1",
        id
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// The bureau's answer: the summary in columns, the full report sealed.
pub async fn complete(
    tx: &mut PgConnection,
    id: Uuid,
    score: Option<i32>,
    bureau: &str,
    bureau_report_id: &str,
    report_enc: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query!("update credit_reports set status = 'completed', score = $2, bureau = $3, bureau_report_id = $4,
                pulled_at = now(), report_enc = $5, failure_reason = null, updated_at = now()
          where id = $1", id, score, bureau, bureau_report_id, report_enc)
    .execute(tx)
    .await?;
    Ok(())
}

/// Fail a pull that is still open; false when it was decided already.
pub async fn fail(tx: &mut PgConnection, id: Uuid, reason: &str) -> Result<bool, sqlx::Error> {
    let changed = sqlx::query!(
        "update credit_reports set status = 'failed', failure_reason = $2, updated_at = now()
          where id = $1 and status in ('queued', 'in_progress')",
        id,
        reason
    )
    .execute(tx)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

pub async fn lead_of(conn: &mut PgConnection, id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!("select lead_id from credit_reports where id = $1", id)
        .fetch_optional(conn)
        .await
}
