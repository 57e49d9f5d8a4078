//! SQL on `credit_reports` (the reads of the HTTP routes and the worker are still being
//! moved here: docs/architecture.md, "Where the code is going").

use sqlx::PgConnection;
use uuid::Uuid;

use super::{Consent, PullType};

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
    // language=PostgreSQL
    sqlx::query(
        "insert into credit_reports (id, lead_id, pull_type, consent_obtained_at, consent_method,
                consent_text_version, consent_ip_enc, consent_obtained_by, request_kind, based_on, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $8)",
    )
    .bind(pull.id)
    .bind(pull.lead_id)
    .bind(pull.pull_type.as_str())
    .bind(pull.consent.obtained_at)
    .bind(pull.consent.method.as_str())
    .bind(&pull.consent.text_version)
    .bind(pull.ip_enc)
    .bind(pull.requested_by)
    .bind(pull.kind)
    .bind(pull.based_on)
    .execute(tx)
    .await?;
    Ok(())
}
