//! The document pipeline (docs/security.md): the first production consumer. For each
//! `doc.uploaded`: HEAD the quarantine object (size within the limit and equal to the
//! declared size), then ONE streaming pass that feeds clamd INSTREAM while hashing
//! (SHA-256), sniffing the real type and encrypting chunk by chunk into a multipart upload
//! to the documents bucket — never the whole file in memory. Clean and of the declared type
//! → `available`; otherwise `rejected` with a reason and the encrypted copy removed. The
//! quarantine object is deleted once the outcome is recorded. clamd or storage unreachable
//! → retry (never `available` unscanned); retries exhausted → `failed` and the DLQ.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use tokio::sync::Mutex;
use uuid::Uuid;

use super::store;
use crate::audit;
use crate::auth::Actor;
use crate::crypto::stream::Encryptor;
use crate::db::outbox;
use crate::domain::DocumentState;
use crate::events::Event;
use crate::queue::consumer::{Handler, HandlerError, Message};
use crate::scan::ScanOutcome;
use crate::scan::sniff::{self, Detected};
use crate::state::AppState;

pub use crate::events::{DOCUMENT_PIPELINE as CONSUMER, DOCUMENT_PIPELINE_TOPICS as TOPICS};

pub struct DocumentPipeline {
    state: AppState,
    /// Each decided document's outcome and processing time, counted in the metrics only
    /// once its transaction commits (`committed`): a failed commit is no decision.
    decided: std::sync::Mutex<std::collections::HashMap<Uuid, (String, f64)>>,
}

impl DocumentPipeline {
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            decided: Default::default(),
        }
    }
}

/// The pipeline acts as a system actor in the audit log.
fn pipeline_actor() -> Actor {
    Actor::system("document-pipeline", "Document pipeline")
}

fn transient(e: impl Into<anyhow::Error>) -> HandlerError {
    HandlerError::Transient(e.into())
}

struct Pass {
    hasher: Sha256,
    head: Vec<u8>,
    pdf: sniff::PdfEncryption,
    bytes: u64,
    encryptor: Option<Encryptor>,
    /// Feeds the ciphertext to the single streaming PUT into the documents bucket.
    sink: Option<CiphertextSink>,
}

enum Outcome {
    Available { sha256: String, detected: Detected },
    Rejected(&'static str),
}

impl DocumentPipeline {
    async fn process(&self, tx: &mut PgConnection, document: Uuid) -> Result<(), HandlerError> {
        let row = store::pending(&mut *tx, document)
            .await
            .map_err(transient)?;
        let Some(pending) = row else {
            return Err(HandlerError::Permanent(anyhow::anyhow!("no such document")));
        };
        // `failed` is processed again when its message is replayed from the DLQ; other
        // states are decided already (a redelivery).
        if !matches!(
            pending.state,
            DocumentState::Uploaded | DocumentState::Scanning | DocumentState::Failed
        ) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let target = ObjectPath::from(format!("documents/{document}"));
        let outcome = self.decide(document, &pending, &target).await?;
        let label = self
            .record(tx, document, &pending, &outcome, &target)
            .await?;
        if let Ok(mut decided) = self.decided.lock() {
            decided.insert(document, (label, started.elapsed().as_secs_f64()));
        }
        // The metrics and the quarantine copy wait for this transaction to commit.
        Ok(())
    }

    /// What the file is: refused on its size or timing before it is read, else scanned,
    /// checked and encrypted into `target` in one pass.
    async fn decide(
        &self,
        document: Uuid,
        pending: &store::PendingDocument,
        target: &ObjectPath,
    ) -> Result<Outcome, HandlerError> {
        let source = ObjectPath::from(pending.quarantine_key.as_str());
        let meta = self
            .state
            .storage
            .quarantine
            .head(&source)
            .await
            .map_err(transient)?;
        let limit = self.state.settings.documents.max_upload_bytes;
        let declared_size = pending.size_bytes as u64;
        // A borrower who said `complete` early could PUT after the link's revocation with a
        // URL still valid: what was written after it is never processed (kept in
        // quarantine, like the reconciler's `link_revoked`).
        let late = pending.link_revoked_at.is_some()
            && crate::documents::reconciler::Outcome::of(
                Some(meta.last_modified.timestamp()),
                pending.link_revoked_at,
            ) == crate::documents::reconciler::Outcome::LinkRevoked;
        let precheck = if late {
            Some("link_revoked")
        } else if meta.size == 0 {
            Some("empty")
        } else if meta.size > limit {
            Some("too_large")
        } else if meta.size != declared_size {
            Some("size_mismatch")
        } else {
            None
        };
        match precheck {
            Some(reason) => Ok(Outcome::Rejected(reason)),
            None => {
                self.stream_pass(
                    document,
                    pending.lead_id,
                    &source,
                    target,
                    (&pending.content_type, declared_size),
                )
                .await
            }
        }
    }

    /// Record the decision in `tx`: the document's row, its request, the audit row and the
    /// event. Answers the outcome's metric label.
    async fn record(
        &self,
        tx: &mut PgConnection,
        document: Uuid,
        pending: &store::PendingDocument,
        outcome: &Outcome,
        target: &ObjectPath,
    ) -> Result<String, HandlerError> {
        let state = &self.state;
        let (loan_id, lead_id, request) = (
            pending.loan_id,
            pending.lead_id,
            pending.document_request_id,
        );
        let (new_state, reason, sha, detected) = match outcome {
            Outcome::Available { sha256, detected } => (
                DocumentState::Available,
                None,
                Some(sha256.clone()),
                Some(detected.as_str()),
            ),
            Outcome::Rejected(reason) => {
                let _ = state.storage.documents.delete(target).await;
                (DocumentState::Rejected, Some(*reason), None, None)
            }
        };
        let duplicate_of: Option<Uuid> = match &sha {
            Some(sha) => store::available_duplicate(&mut *tx, loan_id, sha, document)
                .await
                .map_err(transient)?,
            None => None,
        };
        store::record_outcome(
            &mut *tx,
            &store::PipelineOutcome {
                id: document,
                state: new_state,
                reason,
                sha256: sha.as_deref(),
                detected_type: detected,
                duplicate_of,
                object_key: matches!(outcome, Outcome::Available { .. })
                    .then(|| target.to_string())
                    .as_deref(),
            },
        )
        .await
        .map_err(transient)?;
        let actor = pipeline_actor();
        if let (Some(request), DocumentState::Available) = (request, new_state) {
            let key = state
                .keys
                .file_key(&state.db, lead_id)
                .await
                .map_err(HandlerError::of_key)?;
            crate::requests::ops::file_received(tx, &key, request, document, "Document pipeline")
                .await
                .map_err(transient)?;
        }
        audit::record(
            tx,
            audit::Entry {
                chain: lead_id,
                actor: &actor,
                action: if new_state == DocumentState::Available { "document.available" } else { "document.rejected" },
                entity_type: "document",
                entity_id: document,
                request_id: None,
                details: json!({ "state": new_state.as_str(), "reason": reason, "duplicate": duplicate_of.is_some() }),
            },
        )
        .await
        .map_err(transient)?;
        let event = decided_event((document, loan_id), new_state, reason);
        outbox::enqueue(tx, &event, None).await.map_err(transient)?;
        Ok(match reason {
            Some(reason) => format!("rejected_{reason}"),
            None => new_state.as_str().to_owned(),
        })
    }

    async fn stream_pass(
        &self,
        document: Uuid,
        lead_id: Uuid,
        source: &ObjectPath,
        target: &ObjectPath,
        (declared_type, declared_size): (&str, u64),
    ) -> Result<Outcome, HandlerError> {
        let state = &self.state;
        let key = state
            .keys
            .file_key(&state.db, lead_id)
            .await
            .map_err(HandlerError::of_key)?;
        // The ciphertext's length is known up front, so it streams out in one PUT while
        // the quarantine copy streams in: no multipart round trips, no buffering.
        let (sink, ciphertext) = futures::channel::mpsc::channel(16);
        let sealed_len = crate::crypto::stream::sealed_len(declared_size);
        let put = {
            let storage = state.storage.clone();
            let target = target.clone();
            tokio::spawn(async move {
                storage
                    .put_document_stream(&target, sealed_len, ciphertext)
                    .await
            })
        };
        let pass = Arc::new(Mutex::new(Pass {
            hasher: Sha256::new(),
            head: Vec::with_capacity(16),
            pdf: sniff::PdfEncryption::default(),
            bytes: 0,
            encryptor: Some(Encryptor::new(&key, 1, document)),
            sink: Some(sink),
        }));
        let body = match state.storage.quarantine.get(source).await {
            Ok(got) => got.into_stream(),
            Err(e) => {
                put.abort();
                return Err(transient(e));
            }
        };
        // Read ahead while the previous chunks are scanned and encrypted (a bounded queue),
        // and hand clamd what has arrived in one piece rather than many small writes.
        let (ahead, arrived) = futures::channel::mpsc::channel(8);
        let reader = tokio::spawn(body.map(Ok).forward(ahead));
        let body = arrived
            .ready_chunks(8)
            .map(|batch: Vec<object_store::Result<bytes::Bytes>>| {
                let mut joined = bytes::BytesMut::new();
                for chunk in batch {
                    joined.extend_from_slice(&chunk?);
                }
                Ok::<_, object_store::Error>(joined.freeze())
            });
        let tee = {
            let pass = pass.clone();
            body.then(move |chunk| feed(pass.clone(), chunk))
        };
        let scan = state.clamd.scan(tee).await;
        reader.abort();
        let mut p = pass.lock().await;
        let sink = p.sink.take();
        let detected = match verdict(scan, &p, declared_type) {
            Ok(Ok(detected)) => detected,
            Ok(Err(reason)) => {
                abort_put(sink, put).await;
                return Ok(Outcome::Rejected(reason));
            }
            Err(not_scanned) => {
                abort_put(sink, put).await;
                return Err(not_scanned);
            }
        };
        let last = p
            .encryptor
            .take()
            .map(Encryptor::finish)
            .unwrap_or_default();
        complete_put(sink, last, put).await?;
        let sha256 = p
            .hasher
            .clone()
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Outcome::Available { sha256, detected })
    }
}

/// The event the pipeline's decision emits: available, or rejected with its reason.
fn decided_event(
    (document_id, loan_id): (Uuid, Uuid),
    state: DocumentState,
    reason: Option<&str>,
) -> Event {
    let reason = reason.map(str::to_owned);
    if state == DocumentState::Available {
        Event::DocAvailable {
            document_id,
            loan_id,
            state,
            reason,
        }
    } else {
        Event::DocRejected {
            document_id,
            loan_id,
            state,
            reason,
        }
    }
}

/// Hash, sniff and encrypt one chunk on its way to clamd, and send its ciphertext to the
/// document's PUT.
async fn feed(
    pass: Arc<Mutex<Pass>>,
    chunk: object_store::Result<bytes::Bytes>,
) -> std::io::Result<bytes::Bytes> {
    let chunk = chunk.map_err(std::io::Error::other)?;
    let mut p = pass.lock().await;
    p.hasher.update(&chunk);
    if p.head.len() < 16 {
        let take = (16 - p.head.len()).min(chunk.len());
        p.head.extend_from_slice(&chunk[..take]);
    }
    p.pdf.feed(&chunk);
    p.bytes += chunk.len() as u64;
    let sealed = p
        .encryptor
        .as_mut()
        .map(|e| e.push(&chunk))
        .unwrap_or_default();
    if let Some(sink) = p.sink.as_mut()
        && !sealed.is_empty()
    {
        // Waits while the PUT is behind: memory stays bounded.
        sink.send(Ok(sealed.into()))
            .await
            .map_err(|_| std::io::Error::other("the document PUT stopped"))?;
    }
    Ok(chunk)
}

type CiphertextSink = futures::channel::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>;
type DocumentPut = tokio::task::JoinHandle<anyhow::Result<()>>;

/// What the scan and the sniffed bytes say: the file's type, or why it is refused (`Err`
/// when it was not scanned at all: retried).
fn verdict(
    scan: ScanOutcome,
    pass: &Pass,
    declared_type: &str,
) -> Result<Result<Detected, &'static str>, HandlerError> {
    match scan {
        ScanOutcome::NotScanned(why) => {
            return Err(HandlerError::Transient(anyhow::anyhow!(
                "not scanned: {why}"
            )));
        }
        ScanOutcome::Infected(_) => return Ok(Err("infected")),
        ScanOutcome::Clean => {}
    }
    let detected = sniff::sniff(&pass.head);
    let Some(detected) = detected.filter(|d| d.matches_declared(declared_type)) else {
        return Ok(Err("type_mismatch"));
    };
    if detected == Detected::Pdf && pass.pdf.found() {
        return Ok(Err("encrypted_pdf"));
    }
    Ok(Ok(detected))
}

/// Refuse the PUT: an error in its body aborts the request, so nothing is stored.
async fn abort_put(sink: Option<CiphertextSink>, put: DocumentPut) {
    if let Some(mut sink) = sink {
        let _ = sink
            .send(Err(std::io::Error::other(
                "not stored: rejected or unscanned",
            )))
            .await;
    }
    let _ = put.await;
}

/// Send the last sealed chunk and wait for the PUT to store the document.
async fn complete_put(
    sink: Option<CiphertextSink>,
    last: Vec<u8>,
    put: DocumentPut,
) -> Result<(), HandlerError> {
    let Some(mut sink) = sink else {
        return Err(HandlerError::Transient(anyhow::anyhow!(
            "the document PUT is gone"
        )));
    };
    let sent = sink.send(Ok(last.into())).await;
    drop(sink);
    let stored = put.await;
    match (sent, stored) {
        (Ok(()), Ok(Ok(()))) => Ok(()),
        (_, Ok(Err(e))) => Err(transient(e)),
        (_, Err(e)) => Err(transient(e)),
        (Err(e), _) => Err(transient(e)),
    }
}

/// The document an uploaded-file event names.
fn document_of(message: &Message) -> Option<Uuid> {
    match message.decoded {
        Some(Event::DocUploaded { document_id, .. }) => Some(document_id),
        _ => None,
    }
}

/// Delete the quarantine copy of a decided document and note it. Failed documents keep
/// theirs: a DLQ replay processes them again. Errors leave the work to the reconciler.
pub async fn purge_quarantine(state: &AppState, document: Uuid) {
    let key = store::purgeable_quarantine_key(&state.db, document)
        .await
        .ok()
        .flatten();
    let Some(key) = key else { return };
    match state
        .storage
        .quarantine
        .delete(&ObjectPath::from(key.as_str()))
        .await
    {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {
            let _ = store::mark_quarantine_purged(&state.db, document).await;
        }
        Err(e) => tracing::info!(error = %e, "quarantine clean-up deferred to the reconciler"),
    }
}

impl Handler for DocumentPipeline {
    fn name(&self) -> &str {
        CONSUMER
    }

    fn topics(&self) -> Vec<String> {
        TOPICS.iter().map(|t| (*t).to_owned()).collect()
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let Event::DocUploaded { document_id, .. } = message.event()? else {
                return Err(HandlerError::Permanent(anyhow::anyhow!(
                    "not an uploaded-file event"
                )));
            };
            let document = *document_id;
            self.process(tx, document).await
        })
    }

    fn committed<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(document) = document_of(message) {
                let decided = self
                    .decided
                    .lock()
                    .ok()
                    .and_then(|mut d| d.remove(&document));
                if let Some((outcome, seconds)) = decided {
                    let metrics = &self.state.metrics;
                    metrics
                        .documents_processed
                        .get_or_create(&crate::metrics::OutcomeLabels { outcome })
                        .inc();
                    metrics.document_processing.observe(seconds);
                }
                purge_quarantine(&self.state, document).await;
            }
        })
    }

    fn exhausted<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        message: &'a Message,
        _error: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if let Some(document) = document_of(message) {
                store::fail_processing(&mut *tx, document).await?;
            }
            Ok(())
        })
    }
}
