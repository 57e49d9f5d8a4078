//! Borrower-file data keys and the blind-index key, backed by PostgreSQL (wrapped forms)
//! and the key provider (wrapping), with a small TTL cache of plaintext keys.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{PgConnection, PgPool};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{DataKey, Kms};

const CACHE_TTL: Duration = Duration::from_secs(300);
const CACHE_MAX: usize = 10_000;
/// Disposed files this process remembers, so a key read just before a disposal is never
/// cached after it; past this many, the oldest half is dropped (the TTL still bounds them).
const DISPOSED_MAX: usize = 100_000;

/// The borrower file was disposed: its data key is destroyed (docs/operations/retention.md).
/// Not a key-service failure — nothing will ever read the file again.
#[derive(Debug, thiserror::Error)]
#[error("the borrower file was disposed: its data key is gone")]
pub struct FileDisposed;

/// Whether `error` says the file was disposed (rather than the key service failing).
pub fn is_disposed(error: &anyhow::Error) -> bool {
    error.downcast_ref::<FileDisposed>().is_some()
}
const SSN_INDEX_KEY: &str = "ssn-blind-index";
const RESPONSE_KEY: &str = "idempotent-responses";
const SESSION_KEY: &str = "sessions";

pub struct KeyRing {
    pub kms: Kms,
    cache: Mutex<HashMap<Uuid, (Arc<DataKey>, Instant)>>,
    disposed: Mutex<(HashSet<Uuid>, VecDeque<Uuid>)>,
    index_key: OnceCell<Arc<DataKey>>,
    response_key: OnceCell<Arc<DataKey>>,
    session_key: OnceCell<Arc<DataKey>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("provider", &self.kms.provider_name())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    pub fn new(kms: Kms) -> Self {
        Self {
            kms,
            cache: Mutex::default(),
            disposed: Mutex::default(),
            index_key: OnceCell::new(),
            response_key: OnceCell::new(),
            session_key: OnceCell::new(),
        }
    }

    fn remember(&self, file: Uuid, key: Arc<DataKey>) {
        if self
            .disposed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .contains(&file)
        {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(file, (key, Instant::now()));
    }

    /// Create the data key of a new borrower file, in the caller's transaction.
    pub async fn create_file_key(
        &self,
        tx: &mut PgConnection,
        file: Uuid,
    ) -> anyhow::Result<Arc<DataKey>> {
        let (key, wrapped, version) = self
            .kms
            .generate(&file.to_string())
            .await
            .context("generating a data key")?;
        sqlx::query!(
            "insert into borrower_files (id, wrapped_dek, kek_version) values ($1, $2, $3)",
            file,
            &wrapped,
            version as i32
        )
        .execute(&mut *tx)
        .await?;
        let key = Arc::new(key);
        self.remember(file, key.clone());
        Ok(key)
    }

    /// The data key of an existing borrower file.
    pub async fn file_key(&self, db: &PgPool, file: Uuid) -> anyhow::Result<Arc<DataKey>> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((key, at)) = cache.get(&file)
                && at.elapsed() < CACHE_TTL
            {
                return Ok(key.clone());
            }
        }
        let wrapped: Option<String> =
            sqlx::query_scalar!("select wrapped_dek from borrower_files where id = $1", file)
                .fetch_one(db)
                .await
                .context("reading a wrapped data key")?;
        // A disposed file's key was destroyed (docs/operations/retention.md): nothing of it
        // can be read again.
        let wrapped = wrapped.ok_or(FileDisposed)?;
        let key = Arc::new(self.kms.unwrap(&wrapped, &file.to_string()).await?);
        self.remember(file, key.clone());
        Ok(key)
    }

    /// Drop the cached plaintext key of `file` (after its disposal, here or in another
    /// process: the `file.disposed` broadcast).
    pub fn forget(&self, file: Uuid) {
        {
            let mut disposed = self.disposed.lock().unwrap_or_else(|p| p.into_inner());
            let (set, order) = &mut *disposed;
            if set.insert(file) {
                order.push_back(file);
            }
            while order.len() > DISPOSED_MAX {
                if let Some(oldest) = order.pop_front() {
                    set.remove(&oldest);
                }
            }
        }
        // The last holder's drop zeroizes the key; a request already using it finishes.
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&file);
    }

    /// Drop every cached file key (after the broadcast was missed: a lost broker
    /// connection).
    pub fn forget_all(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Destroy the wrapped data keys of `files` in the caller's transaction:
    /// crypto-shredding. The rows stay (each id, the key derivation context, is never used
    /// again); the wrapped keys become null. Each file's cached key is forgotten (the caller
    /// forgets them again after its commit, when a concurrent read may have cached one).
    pub async fn destroy_file_keys(
        &self,
        tx: &mut PgConnection,
        files: &[Uuid],
        at: time::OffsetDateTime,
    ) -> anyhow::Result<u64> {
        let destroyed = sqlx::query!(
            "update borrower_files set wrapped_dek = null, disposed_at = $2
              where id = any($1) and wrapped_dek is not null",
            files,
            at
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        for file in files {
            self.forget(*file);
        }
        Ok(destroyed)
    }

    /// The SSN blind-index key: created once per installation, stored wrapped.
    pub async fn ssn_index_key(&self, db: &PgPool) -> anyhow::Result<Arc<DataKey>> {
        self.index_key
            .get_or_try_init(|| self.named_key(db, SSN_INDEX_KEY))
            .await
            .cloned()
    }

    /// The key that seals stored idempotent responses (they can hold PII).
    pub async fn response_key(&self, db: &PgPool) -> anyhow::Result<Arc<DataKey>> {
        self.response_key
            .get_or_try_init(|| self.named_key(db, RESPONSE_KEY))
            .await
            .cloned()
    }

    /// The key that seals the provider's refresh tokens kept with browser sessions.
    pub async fn session_key(&self, db: &PgPool) -> anyhow::Result<Arc<DataKey>> {
        self.session_key
            .get_or_try_init(|| self.named_key(db, SESSION_KEY))
            .await
            .cloned()
    }

    /// An installation-wide key by name: created on first use, stored wrapped.
    async fn named_key(&self, db: &PgPool, name: &'static str) -> anyhow::Result<Arc<DataKey>> {
        let context = format!("keyring:{name}");
        let existing: Option<String> =
            sqlx::query_scalar!("select wrapped_key from keyring where name = $1", name)
                .fetch_optional(db)
                .await?;
        let wrapped = match existing {
            Some(wrapped) => wrapped,
            None => {
                let (_, wrapped, version) = self.kms.generate(&context).await?;
                // Two replicas may race here; the first insert wins and both use it.
                sqlx::query!(
                    "insert into keyring (name, wrapped_key, kek_version) values ($1, $2, $3)
                     on conflict (name) do nothing",
                    name,
                    &wrapped,
                    version as i32
                )
                .execute(db)
                .await?;
                sqlx::query_scalar!("select wrapped_key from keyring where name = $1", name)
                    .fetch_one(db)
                    .await?
            }
        };
        Ok(Arc::new(self.kms.unwrap(&wrapped, &context).await?))
    }

    /// Operator: how many stored keys are still wrapped under a master version below
    /// `below` (disposed files' destroyed keys do not count). A key epoch ends only at 0.
    pub async fn wrapped_below(db: &PgPool, below: u32) -> anyhow::Result<i64> {
        let below = i32::try_from(below)?;
        Ok(sqlx::query_scalar!(
            r#"select (select count(*) from borrower_files
                        where wrapped_dek is not null and kek_version < $1)
                    + (select count(*) from keyring where kek_version < $1) as "left!""#,
            below
        )
        .fetch_one(db)
        .await?)
    }

    /// Operator: the version below which the last key epoch destroyed every master version.
    pub async fn last_epoch(db: &PgPool) -> anyhow::Result<Option<u32>> {
        let below: Option<i32> = sqlx::query_scalar!("select max(retired_below) from key_epochs")
            .fetch_one(db)
            .await?;
        Ok(below.map(|b| b.max(0).unsigned_abs()))
    }

    /// Operator: record the end of a key epoch (after the provider destroyed the versions).
    pub async fn record_epoch(db: &PgPool, below: u32, provider: &str) -> anyhow::Result<()> {
        sqlx::query!(
            "insert into key_epochs (retired_below, provider) values ($1, $2)",
            i32::try_from(below)?,
            provider
        )
        .execute(db)
        .await?;
        Ok(())
    }

    /// Operator: rewrap every stored key wrapped under an older master version, in batches;
    /// safe to interrupt and re-run, and to run while the service serves.
    pub async fn rewrap_all(&self, db: &PgPool, newest: u32) -> anyhow::Result<u64> {
        let mut done = 0u64;
        loop {
            let batch = sqlx::query!(
                r#"select id, wrapped_dek as "wrapped_dek!", kek_version from borrower_files
                  where kek_version < $1 and wrapped_dek is not null order by id limit 200"#,
                newest as i32
            )
            .fetch_all(db)
            .await?;
            if batch.is_empty() {
                break;
            }
            for file in batch {
                let (id, wrapped, old) = (file.id, file.wrapped_dek, file.kek_version);
                let (rewrapped, version) = self.kms.rewrap(&wrapped, &id.to_string()).await?;
                // Only if nobody rewrapped it meanwhile (another operator run).
                let updated = sqlx::query!("update borrower_files set wrapped_dek = $2, kek_version = $3, rewrapped_at = now()
                      where id = $1 and kek_version = $4", id, &rewrapped, version as i32, old)
                .execute(db)
                .await?;
                done += updated.rows_affected();
            }
        }
        let names = sqlx::query!(
            "select name, wrapped_key, kek_version from keyring where kek_version < $1",
            newest as i32
        )
        .fetch_all(db)
        .await?;
        for key in names {
            let (name, wrapped, old) = (key.name, key.wrapped_key, key.kek_version);
            let (rewrapped, version) = self
                .kms
                .rewrap(&wrapped, &format!("keyring:{name}"))
                .await?;
            sqlx::query!("update keyring set wrapped_key = $2, kek_version = $3 where name = $1 and kek_version = $4", &name, &rewrapped, version as i32, old)
                .execute(db)
                .await?;
            done += 1;
        }
        Ok(done)
    }
}
