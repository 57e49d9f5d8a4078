//! Documents in the records lifecycle (docs/operations/retention.md), for the retention
//! aggregate: what a borrower file's disposal does to its documents — rows blanked, objects
//! deleted from both buckets —, the record-level rule for rejected documents, and the
//! decrypted bytes the borrower-file export writes.

pub mod store;

use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit;
use crate::auth::Actor;
use crate::error::AppError;
use crate::state::AppState;

/// Disposal (crate::retention): blank what this aggregate keeps of the file.
pub async fn blank_for_disposal(
    tx: &mut sqlx::PgConnection,
    leads: &[Uuid],
    at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    store::blank_for_disposal(tx, leads, at).await
}

/// Disposal (crate::retention): delete every object of the borrower files `leads` from
/// both buckets — the encrypted documents and any upload in quarantine (which is not
/// encrypted) —, eight at a time. Idempotent: an object already gone counts as deleted. The
/// files done for good: all their objects deleted and none of their pre-signed upload URLs
/// still valid (until then a PUT may still land, so the caller deletes again later). The
/// stores here keep no versions; where versioning is on, a lifecycle rule expires
/// noncurrent versions (docs/operations/retention.md).
pub async fn delete_files_objects(
    state: &AppState,
    leads: &[Uuid],
    now: OffsetDateTime,
) -> anyhow::Result<Vec<Uuid>> {
    let mut conn = state.db.acquire().await?;
    let objects = store::objects_of_files(&mut conn, leads).await?;
    let open = store::uploads_still_open(&mut conn, leads, now).await?;
    drop(conn);
    let mut failed = std::collections::HashSet::new();
    for group in objects.chunks(8) {
        let deleted =
            futures::future::join_all(group.iter().map(|o| delete_objects(state, o))).await;
        for (object, deleted) in group.iter().zip(deleted) {
            if let Err(e) = deleted {
                tracing::warn!(file_id = %object.lead_id, error = %format!("{e:#}"), "an object of a disposed file was not deleted");
                failed.insert(object.lead_id);
            }
        }
    }
    let done: Vec<Uuid> = leads
        .iter()
        .copied()
        .filter(|lead| !failed.contains(lead) && !open.contains(lead))
        .collect();
    let mut conn = state.db.acquire().await?;
    store::mark_objects_deleted(&mut conn, &done).await?;
    Ok(done)
}

/// Both objects of a document: where the pipeline writes its ciphertext (also when it never
/// recorded it) and its quarantine upload.
async fn delete_objects(state: &AppState, object: &store::FileObject) -> anyhow::Result<()> {
    let written = format!("documents/{}", object.id);
    delete_if_present(&*state.storage.documents, &written).await?;
    if let Some(key) = object.object_key.as_deref().filter(|k| *k != written) {
        delete_if_present(&*state.storage.documents, key).await?;
    }
    delete_if_present(&*state.storage.quarantine, &object.quarantine_key).await
}

async fn delete_if_present(store: &dyn object_store::ObjectStore, key: &str) -> anyhow::Result<()> {
    match store.delete(&ObjectPath::from(key)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "deleting a disposed document's object: {e}"
        )),
    }
}

/// Record-level disposal (crate::retention): up to `limit` documents rejected more than
/// `days` before `at`, of files no hold keeps. Each is checked again and closed in its own
/// transaction holding its lead (so a hold cannot be placed meanwhile) and audited
/// `document.disposed`; then the objects of every disposed document still stored are
/// deleted (a crash in between is finished by the next round). How many were disposed.
pub async fn dispose_rejected(
    state: &AppState,
    at: OffsetDateTime,
    days: i32,
    limit: i64,
) -> anyhow::Result<u64> {
    let due = {
        let mut conn = state.db.acquire().await?;
        store::due_rejected(&mut conn, at, days, limit).await?
    };
    let retention = Actor::system("retention", "Retention");
    let mut disposed = 0;
    for document in due {
        let mut tx = state.db.begin().await?;
        if crate::leads::ops::lock_for_disposal(&mut tx, &[document.lead_id])
            .await?
            .is_empty()
        {
            continue;
        }
        if store::dispose_rejected(&mut tx, document.id, at, days).await? {
            audit::record(
                &mut tx,
                audit::Entry {
                    chain: document.lead_id,
                    actor: &retention,
                    action: "document.disposed",
                    entity_type: "document",
                    entity_id: document.id,
                    request_id: None,
                    details: json!({ "rule": "documents_rejected_days" }),
                },
            )
            .await?;
            disposed += 1;
        }
        tx.commit().await?;
    }
    let pending = {
        let mut conn = state.db.acquire().await?;
        store::disposed_with_objects(&mut conn, limit).await?
    };
    for object in &pending {
        delete_objects(state, object).await?;
        let mut conn = state.db.acquire().await?;
        store::objects_gone(&mut conn, object.id).await?;
    }
    Ok(disposed)
}

/// The decrypted bytes of the available document `id` of the borrower file `lead`, whole
/// (at most `documents.max_upload_bytes`): the borrower-file export reads one at a time.
pub async fn plaintext(state: &AppState, lead: Uuid, id: Uuid) -> Result<Vec<u8>, AppError> {
    let mut conn = state.db.acquire().await?;
    let object = super::store::object_of(&mut conn, id).await?;
    drop(conn);
    let key = object
        .object_key
        .ok_or_else(|| anyhow::anyhow!("an available document has no object"))?;
    let unavailable = |e: object_store::Error| AppError::DependencyUnavailable {
        dependency: "s3",
        source: e.into(),
    };
    let sealed = state
        .storage
        .documents
        .get(&ObjectPath::from(key.as_str()))
        .await
        .map_err(unavailable)?
        .bytes()
        .await
        .map_err(unavailable)?;
    let file_key = state.file_key(lead).await?;
    crate::crypto::stream::decrypt_all(&file_key, id, &sealed)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("a stored document does not decrypt: {e}")))
}
