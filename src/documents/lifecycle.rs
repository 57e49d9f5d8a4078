//! Documents in the records lifecycle (docs/operations/retention.md), for the retention
//! aggregate: what a borrower file's disposal does to its documents — rows blanked, objects
//! deleted from both buckets —, the record-level rule for rejected documents, and the
//! decrypted bytes the borrower-file export writes.

use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::store;
use crate::audit;
use crate::auth::Actor;
use crate::error::AppError;
use crate::state::AppState;

/// Disposal (crate::retention): blank what this aggregate keeps of the file.
pub async fn blank_for_disposal(
    tx: &mut sqlx::PgConnection,
    lead: Uuid,
) -> Result<(), sqlx::Error> {
    store::blank_for_disposal(tx, lead).await
}

/// Disposal (crate::retention): delete every object of the borrower file `lead` from both
/// buckets — the encrypted documents and any upload still in quarantine (which is not
/// encrypted). Idempotent: an object already gone counts as deleted. The stores here keep
/// no versions; where versioning is on, a lifecycle rule expires noncurrent versions
/// (docs/operations/retention.md).
pub async fn delete_file_objects(state: &AppState, lead: Uuid) -> anyhow::Result<usize> {
    let mut conn = state.db.acquire().await?;
    let objects = store::objects_of_file(&mut conn, lead).await?;
    drop(conn);
    let mut deleted = 0;
    for object in &objects {
        if let Some(key) = &object.object_key {
            delete_if_present(&*state.storage.documents, key).await?;
            deleted += 1;
        }
        delete_if_present(&*state.storage.quarantine, &object.quarantine_key).await?;
        deleted += 1;
    }
    let mut conn = state.db.acquire().await?;
    store::mark_objects_deleted(&mut conn, lead).await?;
    Ok(deleted)
}

async fn delete_if_present(store: &dyn object_store::ObjectStore, key: &str) -> anyhow::Result<()> {
    match store.delete(&ObjectPath::from(key)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("deleting a disposed file's object: {e}")),
    }
}

/// Record-level disposal (crate::retention): up to `limit` documents rejected more than
/// `days` before `at`, of files no hold keeps. Each one's objects go first (idempotent), then
/// its row is blanked and audited `document.disposed`; how many.
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
        if let Some(key) = &document.object_key {
            delete_if_present(&*state.storage.documents, key).await?;
        }
        delete_if_present(&*state.storage.quarantine, &document.quarantine_key).await?;
        let mut tx = state.db.begin().await?;
        if store::dispose_rejected(&mut tx, document.id, at).await? {
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
    Ok(disposed)
}

/// The decrypted bytes of the available document `id` of the borrower file `lead`, whole
/// (at most `documents.max_upload_bytes`): the borrower-file export reads one at a time.
pub async fn plaintext(state: &AppState, lead: Uuid, id: Uuid) -> Result<Vec<u8>, AppError> {
    let mut conn = state.db.acquire().await?;
    let object = store::object_of(&mut conn, id).await?;
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
