//! The audit log: one row per change and per PII read, written in the same transaction as
//! what it records, hash-chained per borrower file (see the migration for why per file).

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::Actor;

/// The chain of installation-wide events (not about one borrower file).
pub const GLOBAL_CHAIN: Uuid = Uuid::nil();

pub struct Entry<'a> {
    pub chain: Uuid,
    pub actor: &'a Actor,
    pub action: &'a str,
    pub entity_type: &'a str,
    pub entity_id: Uuid,
    pub request_id: Option<&'a str>,
    /// Field names and states only — never PII values.
    pub details: Value,
}

/// What the hash covers, in a fixed order.
#[derive(Serialize)]
struct Hashed<'a> {
    chain_id: Uuid,
    chain_seq: i64,
    at: i128,
    actor_subject: &'a str,
    actor_roles: &'a [String],
    action: &'a str,
    entity_type: &'a str,
    entity_id: Uuid,
    request_id: Option<&'a str>,
    details: &'a Value,
}

pub fn link_hash(prev: &[u8], content: &HashedRow<'_>) -> Vec<u8> {
    let hashed = Hashed {
        chain_id: content.chain_id,
        chain_seq: content.chain_seq,
        at: content.at.unix_timestamp_nanos() / 1000,
        actor_subject: content.actor_subject,
        actor_roles: content.actor_roles,
        action: content.action,
        entity_type: content.entity_type,
        entity_id: content.entity_id,
        request_id: content.request_id,
        // serde_json's Map is ordered by key, so jsonb's reordering does not matter.
        details: content.details,
    };
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(serde_json::to_vec(&hashed).unwrap_or_default());
    hasher.finalize().to_vec()
}

pub struct HashedRow<'a> {
    pub chain_id: Uuid,
    pub chain_seq: i64,
    pub at: OffsetDateTime,
    pub actor_subject: &'a str,
    pub actor_roles: &'a [String],
    pub action: &'a str,
    pub entity_type: &'a str,
    pub entity_id: Uuid,
    pub request_id: Option<&'a str>,
    pub details: &'a Value,
}

pub async fn record(tx: &mut PgConnection, entry: Entry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into audit_chains (chain_id, last_seq, last_hash) values ($1, 0, '\\x')
         on conflict (chain_id) do nothing",
        entry.chain
    )
    .execute(&mut *tx)
    .await?;
    // Locks this file's chain until the transaction ends; other files are not affected.
    let chain = sqlx::query!(
        "select last_seq, last_hash from audit_chains where chain_id = $1 for update",
        entry.chain
    )
    .fetch_one(&mut *tx)
    .await?;
    let (last_seq, last_hash) = (chain.last_seq, chain.last_hash);
    // PostgreSQL keeps microseconds; hash what will be stored.
    let now = OffsetDateTime::now_utc();
    let at = now
        .replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap_or(now);
    let roles: Vec<String> = entry
        .actor
        .roles
        .iter()
        .map(|r| r.as_str().to_owned())
        .collect();
    let seq = last_seq + 1;
    let hash = link_hash(
        &last_hash,
        &HashedRow {
            chain_id: entry.chain,
            chain_seq: seq,
            at,
            actor_subject: &entry.actor.subject,
            actor_roles: &roles,
            action: entry.action,
            entity_type: entry.entity_type,
            entity_id: entry.entity_id,
            request_id: entry.request_id,
            details: &entry.details,
        },
    );
    sqlx::query!("insert into audit_log (chain_id, chain_seq, prev_hash, hash, at, actor_subject, actor_roles,
                                action, entity_type, entity_id, request_id, details)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)", entry.chain, seq, &last_hash, &hash, at, &entry.actor.subject, &roles, entry.action, entry.entity_type, entry.entity_id, entry.request_id, &entry.details)
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update audit_chains set last_seq = $2, last_hash = $3 where chain_id = $1",
        entry.chain,
        seq,
        &hash
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[derive(Debug)]
struct StoredRow {
    seq: i64,
    chain_id: Uuid,
    chain_seq: i64,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
    at: OffsetDateTime,
    actor_subject: String,
    actor_roles: Vec<String>,
    action: String,
    entity_type: String,
    entity_id: Uuid,
    request_id: Option<String>,
    details: Value,
}

/// The first broken link, if any: `(seq, why)`.
pub async fn verify(db: &sqlx::PgPool) -> Result<(u64, Option<(i64, String)>), sqlx::Error> {
    use futures::TryStreamExt;
    let mut rows = sqlx::query_as!(
        StoredRow,
        "select seq, chain_id, chain_seq, prev_hash, hash, at, actor_subject, actor_roles,
                action, entity_type, entity_id, request_id, details
           from audit_log order by chain_id, chain_seq"
    )
    .fetch(db);
    let mut checked = 0u64;
    let mut current: Option<(Uuid, i64, Vec<u8>)> = None;
    while let Some(row) = rows.try_next().await? {
        let (expected_seq, expected_prev) = match &current {
            Some((chain, seq, hash)) if *chain == row.chain_id => (seq + 1, hash.clone()),
            _ => (1, Vec::new()),
        };
        if row.chain_seq != expected_seq {
            return Ok((
                checked,
                Some((
                    row.seq,
                    format!(
                        "chain {} skips from {} to {}",
                        row.chain_id,
                        expected_seq - 1,
                        row.chain_seq
                    ),
                )),
            ));
        }
        if row.prev_hash != expected_prev {
            return Ok((
                checked,
                Some((
                    row.seq,
                    "prev_hash does not match the previous entry".into(),
                )),
            ));
        }
        let recomputed = link_hash(
            &row.prev_hash,
            &HashedRow {
                chain_id: row.chain_id,
                chain_seq: row.chain_seq,
                at: row.at,
                actor_subject: &row.actor_subject,
                actor_roles: &row.actor_roles,
                action: &row.action,
                entity_type: &row.entity_type,
                entity_id: row.entity_id,
                request_id: row.request_id.as_deref(),
                details: &row.details,
            },
        );
        if recomputed != row.hash {
            return Ok((
                checked,
                Some((
                    row.seq,
                    "the entry's content does not match its hash".into(),
                )),
            ));
        }
        checked += 1;
        current = Some((row.chain_id, row.chain_seq, row.hash));
    }
    Ok((checked, None))
}

/// An audit row about a session, in the installation-wide chain.
pub async fn session_event(
    tx: &mut sqlx::PgConnection,
    actor: &Actor,
    action: &str,
    id_hash: &[u8],
    request_id: Option<&str>,
    details: Value,
) -> Result<(), sqlx::Error> {
    record(
        tx,
        Entry {
            chain: GLOBAL_CHAIN,
            actor,
            action,
            entity_type: "session",
            entity_id: crate::auth::session::audit_id(id_hash),
            request_id,
            details,
        },
    )
    .await
}

/// The audit list's filters, already parsed.
pub struct PageFilter {
    pub entity_type: Option<String>,
    pub entity_id: Option<Uuid>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    /// Entries before this sequence number (the previous page's cursor).
    pub before: Option<i64>,
}

/// An audit entry as the list shows it.
pub struct ListedRow {
    pub seq: i64,
    pub at: OffsetDateTime,
    pub actor_subject: String,
    pub actor_roles: Vec<String>,
    pub action: String,
    pub entity_type: String,
    pub entity_id: Uuid,
    pub request_id: Option<String>,
    pub details: Value,
}

/// The list's statement with `$lead` — the condition its index serves — spliced in; every
/// filter is a nullable parameter.
macro_rules! audit_page {
    ($lead:tt, $filter:expr, $fetch:expr) => {
        sqlx::query_as!(
            ListedRow,
            "select seq, at, actor_subject, actor_roles, action, entity_type, entity_id,
                    request_id, details
               from audit_log where "
                + $lead
                + "
                and ($1::text is null or entity_type = $1)
                and ($2::uuid is null or entity_id = $2)
                and ($3::text is null or actor_subject = $3)
                and ($4::timestamptz is null or at >= $4)
                and ($5::timestamptz is null or at < $5)
                and ($6::bigint is null or seq < $6)
                and ($8::text is null or action = $8)
              order by seq desc limit $7",
            $filter.entity_type,
            $filter.entity_id,
            $filter.actor,
            $filter.from,
            $filter.to,
            $filter.before,
            $fetch,
            $filter.action
        )
    };
}

/// Up to `fetch` entries, newest first. One static statement per index the filter can use —
/// an entity's history, an actor's actions, or the whole log — so a generic plan keeps the
/// index the caller's filter needs.
pub async fn page(
    db: &sqlx::PgPool,
    filter: &PageFilter,
    fetch: i64,
) -> Result<Vec<ListedRow>, sqlx::Error> {
    if filter.entity_id.is_some() {
        audit_page!("entity_id = $2", filter, fetch)
            .fetch_all(db)
            .await
    } else if filter.actor.is_some() {
        audit_page!("actor_subject = $3", filter, fetch)
            .fetch_all(db)
            .await
    } else {
        audit_page!("true", filter, fetch).fetch_all(db).await
    }
}

/// Who may search the log: compliance and admin (docs/security.md).
fn may_search(actor: &Actor) -> Result<(), crate::error::AppError> {
    if actor.has(crate::auth::Role::Compliance) || actor.has(crate::auth::Role::Admin) {
        Ok(())
    } else {
        Err(crate::error::AppError::forbidden())
    }
}

/// A page of the log for `actor` (compliance and admin; anyone else 403), newest first, and
/// the cursor of the next page.
pub async fn search(
    db: &sqlx::PgPool,
    actor: &Actor,
    filter: &PageFilter,
    limit: i64,
) -> Result<(Vec<ListedRow>, Option<String>), crate::error::AppError> {
    may_search(actor)?;
    let mut rows = page(db, filter, limit + 1).await?;
    let next_cursor = crate::db::next_page(&mut rows, limit, |r| r.seq.to_string());
    Ok((rows, next_cursor))
}

/// Up to `limit` entries of a search for export, the export itself audited
/// (`audit.exported`, the filter in `details`, on the global chain).
pub async fn export(
    db: &sqlx::PgPool,
    actor: &Actor,
    filter: &PageFilter,
    limit: i64,
    request_id: &str,
) -> Result<Vec<ListedRow>, crate::error::AppError> {
    may_search(actor)?;
    let rows = page(db, filter, limit).await?;
    let mut tx = db.begin().await?;
    record(
        &mut tx,
        Entry {
            chain: GLOBAL_CHAIN,
            actor,
            action: "audit.exported",
            entity_type: "audit",
            entity_id: uuid::Uuid::nil(),
            request_id: Some(request_id),
            details: serde_json::json!({
                "entity_type": filter.entity_type,
                "entity_id": filter.entity_id,
                "actor": filter.actor,
                "action": filter.action,
                "from": filter.from.map(crate::domain::rfc3339),
                "to": filter.to.map(crate::domain::rfc3339),
                "rows": rows.len(),
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(rows)
}
