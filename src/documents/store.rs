//! The only code that runs SQL on `documents`.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::ReadScope;
use crate::domain::DocumentState;

#[derive(Debug)]
pub struct DocumentRow {
    pub id: Uuid,
    pub loan_id: Uuid,
    pub lead_id: Uuid,
    pub document_request_id: Option<Uuid>,
    pub filename_enc: Vec<u8>,
    pub content_type: String,
    pub size_bytes: i64,
    pub doc_type: String,
    pub state: DocumentState,
    pub reason: Option<String>,
    pub sha256: Option<String>,
    pub detected_type: Option<String>,
    pub duplicate_of: Option<Uuid>,
    pub uploaded_by: String,
    pub review_decision: Option<String>,
    pub review_reason_enc: Option<Vec<u8>>,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// The loan's owner and team: whom the document's PII is masked for.
    pub owner_subject: String,
    pub team: Option<String>,
}

/// `query_as!` into a [`DocumentRow`]: the document's columns and its loan's owner and team
/// (`from documents d join loans o`, never of a disposed file) followed by `$tail`.
macro_rules! select_document {
    ($first:tt $(+ $tail:tt)* $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            DocumentRow,
            "select d.id, d.loan_id, d.lead_id, d.document_request_id, d.filename_enc,
                    d.content_type, d.size_bytes, d.doc_type, d.state, d.reason, d.sha256,
                    d.detected_type, d.duplicate_of, d.uploaded_by, d.review_decision,
                    d.review_reason_enc, d.reviewed_by, d.reviewed_at, d.created_at, d.updated_at,
                    o.owner_subject, o.team
               from documents d join loans o on o.id = d.loan_id
               join leads dl on dl.id = d.lead_id and dl.disposed_at is null " + $first $(+ $tail)*
            $(, $arg)*
        )
    };
}

/// One document within `scope` (of its loan's owner and team); `for_update` locks it.
pub async fn fetch(
    conn: &mut PgConnection,
    id: Uuid,
    scope: &ReadScope,
    for_update: bool,
) -> Result<Option<DocumentRow>, sqlx::Error> {
    let (owner, team) = (scope.owner(), scope.team());
    if for_update {
        select_document!(
            "where d.id = $1 and ($2::text is null or o.owner_subject = $2)
                and ($3::text is null or o.team = $3)
             for update of d",
            id,
            owner,
            team
        )
        .fetch_optional(conn)
        .await
    } else {
        select_document!(
            "where d.id = $1 and ($2::text is null or o.owner_subject = $2)
                and ($3::text is null or o.team = $3)",
            id,
            owner,
            team
        )
        .fetch_optional(conn)
        .await
    }
}

/// Up to `fetch` documents of a loan within `scope`, newest first, before `before` (the
/// loan's index decides the plan, so the scope is a nullable parameter).
pub async fn loan_page(
    db: &sqlx::PgPool,
    loan: Uuid,
    scope: &ReadScope,
    before: Option<Uuid>,
    fetch: i64,
) -> Result<Vec<DocumentRow>, sqlx::Error> {
    select_document!(
        "where d.loan_id = $1 and ($2::text is null or o.owner_subject = $2)
            and ($3::text is null or o.team = $3) and ($4::uuid is null or d.id < $4)
          order by d.id desc limit $5",
        loan,
        scope.owner(),
        scope.team(),
        before,
        fetch
    )
    .fetch_all(db)
    .await
}

/// What a review needs of a document within `scope` (of its loan), the document locked.
#[derive(Debug)]
pub struct ReviewTarget {
    pub loan_id: Uuid,
    pub lead_id: Uuid,
    pub state: DocumentState,
    pub document_request_id: Option<Uuid>,
}

pub async fn review_target(
    tx: &mut PgConnection,
    id: Uuid,
    scope: &ReadScope,
) -> Result<Option<ReviewTarget>, sqlx::Error> {
    sqlx::query_as!(
        ReviewTarget,
        "select d.loan_id, d.lead_id, d.state, d.document_request_id
           from documents d join loans o on o.id = d.loan_id
           join leads l on l.id = d.lead_id and l.disposed_at is null
          where d.id = $1
            and ($2::text is null or o.owner_subject = $2) and ($3::text is null or o.team = $3)
          for update of d",
        id,
        scope.owner(),
        scope.team()
    )
    .fetch_optional(tx)
    .await
}

/// Record the agent's decision (`accept` / `reject`) and its sealed reason.
pub async fn set_review(
    tx: &mut PgConnection,
    id: Uuid,
    decision: &str,
    reason_enc: Option<&[u8]>,
    reviewed_by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update documents set review_decision = $2, review_reason_enc = $3, reviewed_by = $4,
                reviewed_at = now(), updated_at = now()
          where id = $1",
        id,
        decision,
        reason_enc,
        reviewed_by
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// The stored object of an available document and the type the pipeline detected.
pub struct StoredObject {
    pub object_key: Option<String>,
    pub detected_type: Option<String>,
}

pub async fn object_of(conn: &mut PgConnection, id: Uuid) -> Result<StoredObject, sqlx::Error> {
    sqlx::query_as!(
        StoredObject,
        "select object_key, detected_type from documents where id = $1",
        id
    )
    .fetch_one(conn)
    .await
}

/// Move a document to `state` (a soft delete, an upload that arrived).
pub async fn set_state(
    tx: &mut PgConnection,
    id: Uuid,
    state: DocumentState,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update documents set state = $2, updated_at = now() where id = $1",
        id,
        state as DocumentState
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// The upload link a document came through, if any.
pub async fn link_of(conn: &mut PgConnection, id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!("select upload_link_id from documents where id = $1", id)
        .fetch_one(conn)
        .await
}

/// An announced upload, `awaiting_upload` until its file arrives.
pub struct Announced<'a> {
    pub id: Uuid,
    pub loan_id: Uuid,
    pub lead_id: Uuid,
    pub document_request_id: Option<Uuid>,
    pub filename_enc: &'a [u8],
    pub content_type: &'a str,
    pub size_bytes: i64,
    pub doc_type: &'a str,
    pub created_by: &'a str,
    pub quarantine_key: &'a str,
    /// How long the pre-signed PUT (and so the announcement) lives.
    pub upload_ttl_secs: f64,
    /// `agent` or `borrower`.
    pub uploaded_by: &'a str,
    pub upload_link_id: Option<Uuid>,
}

pub async fn insert_announced(tx: &mut PgConnection, d: &Announced<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!("insert into documents (id, loan_id, lead_id, document_request_id, filename_enc, content_type,
                                size_bytes, doc_type, uploaded_by, created_by, quarantine_key, upload_expires_at,
                                upload_link_id)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $12, $9, $10, now() + make_interval(secs => $11), $13)", d.id, d.loan_id, d.lead_id, d.document_request_id, d.filename_enc, d.content_type, d.size_bytes, d.doc_type, d.created_by, d.quarantine_key, d.upload_ttl_secs, d.uploaded_by, d.upload_link_id)
    .execute(tx)
    .await?;
    Ok(())
}

/// An announcement whose upload window closed, with when its link was revoked: whether the
/// file came too late or was cut off.
pub struct ExpiredUpload {
    pub id: Uuid,
    pub loan_id: Uuid,
    pub lead_id: Uuid,
    pub quarantine_key: String,
    pub revoked_at: Option<OffsetDateTime>,
}

/// The oldest announcement whose upload window closed, locked (skipping ones another
/// replica holds).
pub async fn next_expired_upload(
    tx: &mut PgConnection,
) -> Result<Option<ExpiredUpload>, sqlx::Error> {
    sqlx::query_as!(
        ExpiredUpload,
        r#"select d.id, d.loan_id, d.lead_id, d.quarantine_key,
                  u.revoked_at as "revoked_at?"
             from documents d left join upload_links u on u.id = d.upload_link_id
            where d.state = 'awaiting_upload' and d.upload_expires_at < now()
            order by d.upload_expires_at limit 1 for update of d skip locked"#
    )
    .fetch_optional(tx)
    .await
}

pub async fn set_state_with_reason(
    tx: &mut PgConnection,
    id: Uuid,
    state: DocumentState,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update documents set state = $2, reason = $3, updated_at = now() where id = $1",
        id,
        state as DocumentState,
        reason
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// A document and its loan.
pub struct DocumentOfLoan {
    pub id: Uuid,
    pub loan_id: Uuid,
}

/// Documents `uploaded` longer than `secs` ago whose processing seems lost, locked.
pub async fn stuck_uploaded(
    tx: &mut PgConnection,
    secs: f64,
) -> Result<Vec<DocumentOfLoan>, sqlx::Error> {
    sqlx::query_as!(
        DocumentOfLoan,
        "select id, loan_id from documents
          where state = 'uploaded' and updated_at < now() - make_interval(secs => $1)
          for update skip locked",
        secs
    )
    .fetch_all(tx)
    .await
}

pub async fn touch(tx: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("update documents set updated_at = now() where id = $1", id)
        .execute(tx)
        .await?;
    Ok(())
}

/// Decided documents whose quarantine copy may still exist (a crash between a decision's
/// commit and its clean-up).
pub async fn quarantine_leftovers(db: &sqlx::PgPool, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "select id from documents
          where not quarantine_purged and state in ('available', 'rejected', 'expired', 'deleted')
            and reason is distinct from 'link_revoked'
          limit $1",
        limit
    )
    .fetch_all(db)
    .await
}

/// What the pipeline needs of an uploaded document: its loan, lead, state, declared size
/// and type, quarantine key, request, and when its link was revoked.
pub struct PendingDocument {
    pub loan_id: Uuid,
    pub lead_id: Uuid,
    pub state: DocumentState,
    pub size_bytes: i64,
    pub content_type: String,
    pub quarantine_key: String,
    pub document_request_id: Option<Uuid>,
    pub link_revoked_at: Option<OffsetDateTime>,
}

/// An uploaded document's [`PendingDocument`], the row locked.
pub async fn pending(
    tx: &mut PgConnection,
    id: Uuid,
) -> Result<Option<PendingDocument>, sqlx::Error> {
    sqlx::query_as!(
        PendingDocument,
        r#"select loan_id, lead_id, state, size_bytes, content_type,
                  quarantine_key, document_request_id,
                  (select u.revoked_at from upload_links u where u.id = documents.upload_link_id)
                      as link_revoked_at
             from documents where id = $1 for update"#,
        id
    )
    .fetch_optional(tx)
    .await
}

/// An available document of the loan with the same content, other than `id`.
pub async fn available_duplicate(
    conn: &mut PgConnection,
    loan: Uuid,
    sha256: &str,
    id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!("select id from documents where loan_id = $1 and sha256 = $2 and state = 'available' and id <> $3
          order by id limit 1", loan, sha256, id)
    .fetch_optional(conn)
    .await
}

/// What the pipeline decided about a document.
pub struct PipelineOutcome<'a> {
    pub id: Uuid,
    pub state: DocumentState,
    pub reason: Option<&'a str>,
    pub sha256: Option<&'a str>,
    pub detected_type: Option<&'a str>,
    pub duplicate_of: Option<Uuid>,
    /// The encrypted object's key in the documents bucket, when it became available.
    pub object_key: Option<&'a str>,
}

pub async fn record_outcome(
    tx: &mut PgConnection,
    o: &PipelineOutcome<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update documents set state = $2, reason = $3, sha256 = $4, detected_type = $5,
                duplicate_of = $6, object_key = $7, key_version = $8, updated_at = now()
          where id = $1",
        o.id,
        o.state as DocumentState,
        o.reason,
        o.sha256,
        o.detected_type,
        o.duplicate_of,
        o.object_key,
        // The generation of the file's data key the document was encrypted with.
        1i32,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// The quarantine key of a decided document whose copy may still be there.
pub async fn purgeable_quarantine_key(
    db: &sqlx::PgPool,
    id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "select quarantine_key from documents
          where id = $1 and not quarantine_purged
            and state in ('available', 'rejected', 'expired', 'deleted')
            and reason is distinct from 'link_revoked'",
        id
    )
    .fetch_optional(db)
    .await
}

pub async fn mark_quarantine_purged(db: &sqlx::PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update documents set quarantine_purged = true where id = $1",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A document whose processing ran out of retries: `failed`, unless it was decided.
pub async fn fail_processing(tx: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update documents set state = 'failed', reason = 'processing_failed', updated_at = now()
          where id = $1 and state in ('uploaded', 'scanning')",
        id
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// A file as its link's page lists it.
#[derive(Debug)]
pub struct FileRow {
    pub id: Uuid,
    pub filename_enc: Vec<u8>,
    pub doc_type: String,
    pub document_request_id: Option<Uuid>,
    pub state: DocumentState,
    pub reason: Option<String>,
    pub review_decision: Option<String>,
    pub review_reason_enc: Option<Vec<u8>>,
    pub created_at: OffsetDateTime,
}

/// The files that came through a link, oldest first (deleted ones left out).
pub async fn of_link(conn: &mut PgConnection, link: Uuid) -> Result<Vec<FileRow>, sqlx::Error> {
    sqlx::query_as!(
        FileRow,
        "select id, filename_enc, doc_type, document_request_id, state, reason, review_decision,
                review_reason_enc, created_at
           from documents where upload_link_id = $1 and state <> 'deleted' order by id",
        link
    )
    .fetch_all(conn)
    .await
}
