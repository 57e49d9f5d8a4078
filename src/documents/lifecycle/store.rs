//! The only code that runs SQL on `documents` for the records lifecycle: blanking a
//! disposed file's documents, finding their objects, and the rejected-document rule.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;
/// Where a document of a disposed file may still have bytes: its encrypted object in the
/// documents bucket and its upload in quarantine (ids only, never names).
pub struct FileObject {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub object_key: Option<String>,
    pub quarantine_key: String,
}

/// Every document object of the borrower files `leads`, deleted or not.
pub async fn objects_of_files(
    conn: &mut PgConnection,
    leads: &[Uuid],
) -> Result<Vec<FileObject>, sqlx::Error> {
    sqlx::query_as!(
        FileObject,
        "select id, lead_id, object_key, quarantine_key from documents
          where lead_id = any($1) order by lead_id, id",
        leads
    )
    .fetch_all(conn)
    .await
}

/// Of the files `leads`, those an upload may still reach before `now` (a pre-signed URL of
/// theirs has not expired).
pub async fn uploads_still_open(
    conn: &mut PgConnection,
    leads: &[Uuid],
    now: OffsetDateTime,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "select distinct lead_id from documents
          where lead_id = any($1) and upload_expires_at >= $2",
        leads,
        now
    )
    .fetch_all(conn)
    .await
}

/// The objects of the disposed files `leads` are deleted from both buckets.
pub async fn mark_objects_deleted(
    conn: &mut PgConnection,
    leads: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update documents set quarantine_purged = true where lead_id = any($1)",
        leads
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Disposal (docs/operations/retention.md): the documents of the file `lead` keep their
/// ids, types, sizes, states and dates; the sealed filename and review reason and the
/// content hash (which would confirm a copy of the file) go. An upload still in flight is
/// closed (`deleted`, reason `file_disposed`), so neither the pipeline nor the reconciler
/// picks it up again.
pub async fn blank_for_disposal(
    tx: &mut PgConnection,
    leads: &[Uuid],
    at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update documents set filename_enc = '\\x', review_reason_enc = null, sha256 = null,
                state = case when state in ('awaiting_upload', 'uploaded', 'scanning', 'failed')
                             then 'deleted' else state end,
                reason = case when state in ('awaiting_upload', 'uploaded', 'scanning', 'failed')
                              then 'file_disposed' else reason end,
                disposed_at = coalesce(disposed_at, $2)
          where lead_id = any($1)",
        leads,
        at
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// A rejected document past its period (record-level disposal).
pub struct DueRejected {
    pub id: Uuid,
    pub lead_id: Uuid,
}

/// Up to `limit` documents an agent rejected more than `days` before `at`, not disposed,
/// whose file no legal hold keeps.
pub async fn due_rejected(
    conn: &mut PgConnection,
    at: OffsetDateTime,
    days: i32,
    limit: i64,
) -> Result<Vec<DueRejected>, sqlx::Error> {
    sqlx::query_as!(
        DueRejected,
        "select d.id, d.lead_id from documents d
          where d.review_decision = 'reject' and d.disposed_at is null
            and coalesce(d.reviewed_at, d.updated_at) < $1::timestamptz - make_interval(days => $2)
            and not exists (select 1 from legal_holds h
                             where h.lead_id = d.lead_id and h.lifted_at is null)
          order by d.reviewed_at limit $3",
        at,
        days,
        limit
    )
    .fetch_all(conn)
    .await
}

/// Record-level disposal of one rejected document, checked again under its row lock (still
/// rejected, still past its period, its file not held — the caller holds the lead against a
/// hold): its sealed name, reason and hash go and it is closed (`deleted`, reason
/// `disposed`); its objects are deleted after the commit. True when this call disposed it.
pub async fn dispose_rejected(
    tx: &mut PgConnection,
    id: Uuid,
    at: OffsetDateTime,
    days: i32,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query!(
        "update documents d set filename_enc = '\\x', review_reason_enc = null, sha256 = null,
                state = 'deleted', reason = 'disposed', disposed_at = $2
          where d.id = $1 and d.disposed_at is null and d.review_decision = 'reject'
            and coalesce(d.reviewed_at, d.updated_at) < $2::timestamptz - make_interval(days => $3)
            and not exists (select 1 from legal_holds h
                             where h.lead_id = d.lead_id and h.lifted_at is null)",
        id,
        at,
        days
    )
    .execute(tx)
    .await?
    .rows_affected()
        == 1)
}

/// Disposed documents whose objects may still be stored (up to `limit`).
pub async fn disposed_with_objects(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<FileObject>, sqlx::Error> {
    sqlx::query_as!(
        FileObject,
        "select id, lead_id, object_key, quarantine_key from documents
          where disposed_at is not null and review_decision = 'reject'
            and (object_key is not null or not quarantine_purged)
          order by id limit $1",
        limit
    )
    .fetch_all(conn)
    .await
}

/// The objects of the disposed document `id` are deleted from both buckets.
pub async fn objects_gone(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update documents set object_key = null, quarantine_purged = true where id = $1",
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}
