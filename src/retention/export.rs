//! The borrower-file export (docs/api.md, docs/operations/retention.md): `GET
//! /v1/loans/{id}/export` streams a zip of `file.json` — the lead, the loan, its needs list,
//! credit pull summaries, status history and document manifest, as the API renders them for
//! the caller — and every available document, decrypted. For the agent who hands a file to
//! the LOS, or a borrower who asks for their records; before disposal, or whenever asked.
//! `file.json` follows `docs/schemas/borrower-file.schema.json`.
//!
//! Writing the loan needs write scope and a recent sign-in (step-up); the export is audited
//! `loan.exported` before the first byte goes out. A document that cannot be read mid-way
//! ends the response with an error (the client sees a broken transfer, never a zip that
//! looks whole without it).

use async_zip::tokio::write::ZipFileWriter;
use async_zip::{Compression, ZipEntryBuilder};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::actor::SideEffects;
use crate::audit;
use crate::auth::Actor;
use crate::db::Page;
use crate::domain::rfc3339;
use crate::error::AppError;
use crate::state::AppState;

/// The version of `file.json`'s shape (its schema's `format_version`).
pub const FORMAT_VERSION: u32 = 1;

/// Items read per list: a loan's lists are short; more than this is refused, not cut.
const MAX_ITEMS: i64 = 10_000;

#[derive(Debug, Serialize)]
pub struct FileSummary {
    pub format: &'static str,
    pub format_version: u32,
    pub exported_at: String,
    pub exported_by: String,
    pub lead: crate::leads::Lead,
    pub loan: crate::loans::Loan,
    pub needs_list: Vec<crate::requests::DocumentRequest>,
    pub credit_pulls: Vec<crate::leads::credit::CreditPull>,
    pub history: Vec<crate::loans::HistoryItem>,
    pub documents: Vec<ManifestEntry>,
}

/// One document of the loan; `path` names its entry in the zip when it is there (available
/// documents only).
#[derive(Debug, Serialize)]
pub struct ManifestEntry {
    pub path: Option<String>,
    #[serde(flatten)]
    pub document: crate::documents::Document,
}

/// What the export will write: `file.json` and the documents to decrypt into it.
pub struct Export {
    lead: Uuid,
    pub loan: Uuid,
    summary: Vec<u8>,
    entries: Vec<(Uuid, String)>,
}

fn all<C>() -> Page<C> {
    Page {
        limit: MAX_ITEMS,
        after: None,
    }
}

fn whole<T>(items: Vec<T>, next: Option<String>) -> Result<Vec<T>, AppError> {
    match next {
        None => Ok(items),
        Some(_) => Err(AppError::Internal(anyhow::anyhow!(
            "a loan list is longer than {MAX_ITEMS}: too large to export"
        ))),
    }
}

/// A document's entry name: its id and its filename reduced to safe characters, so no name
/// can climb out of `documents/` or carry control characters.
pub fn entry_name(id: Uuid, filename: &str) -> String {
    let mut safe: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    while safe.contains("..") {
        safe = safe.replace("..", "_");
    }
    let safe = safe.trim_start_matches('.');
    format!("documents/{id}-{safe}")
}

/// Check the caller may export `loan` (write scope, step-up, the CSRF rule of an audited
/// GET), read what `file.json` holds, and audit the export.
pub async fn prepare(
    state: &AppState,
    actor: &Actor,
    loan: Uuid,
    side_effects: SideEffects,
    request_id: &str,
) -> Result<Export, AppError> {
    let lead = {
        let mut conn = state.db.acquire().await?;
        crate::loans::ops::writable_loan(&mut conn, loan, actor).await?
    };
    side_effects.require()?;
    actor.require_recent_auth(state.settings.auth.step_up_max_age_secs)?;

    let lead_view =
        crate::leads::ops::get(state, actor, lead, false, &side_effects, request_id).await?;
    let loan_view = crate::loans::ops::get(state, actor, loan).await?;
    let needs = crate::requests::ops::list(state, actor, loan, all()).await?;
    let pulls = crate::leads::credit::ops::list(state, actor, lead, all()).await?;
    let history = crate::loans::ops::history(state, actor, loan, all()).await?;
    let documents = crate::documents::ops::list(state, actor, loan, all()).await?;
    let documents = whole(documents.items, documents.next_cursor)?;
    let mut entries = Vec::new();
    let manifest: Vec<ManifestEntry> = documents
        .into_iter()
        .map(|document| {
            let path = (document.state == "available").then(|| {
                let name = entry_name(document.id, &document.filename);
                entries.push((document.id, name.clone()));
                name
            });
            ManifestEntry { path, document }
        })
        .collect();
    let summary = FileSummary {
        format: "loanfolio-borrower-file",
        format_version: FORMAT_VERSION,
        exported_at: rfc3339(time::OffsetDateTime::now_utc()),
        exported_by: actor.subject.clone(),
        lead: lead_view,
        loan: loan_view,
        needs_list: whole(needs.items, needs.next_cursor)?,
        credit_pulls: whole(pulls.items, pulls.next_cursor)?,
        history: whole(history.items, history.next_cursor)?,
        documents: manifest,
    };
    let summary = serde_json::to_vec_pretty(&summary)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("file.json: {e}")))?;

    let mut tx = state.db.begin().await?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: lead,
            actor,
            action: "loan.exported",
            entity_type: "loan",
            entity_id: loan,
            request_id: Some(request_id),
            details: json!({ "format": "zip", "documents": entries.len() }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Export {
        lead,
        loan,
        summary,
        entries,
    })
}

/// The zip as a download (the API's and the console's).
pub fn response(state: AppState, export: Export) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    use axum::response::IntoResponse;

    let disposition = format!("attachment; filename=\"loan-{}.zip\"", export.loan);
    let mut response = body(state, export).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// The zip as a response body, written while it is sent (one document in memory at a time).
fn body(state: AppState, export: Export) -> axum::body::Body {
    let (writer, reader) = tokio::io::duplex(256 * 1024);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let result = write_zip(&state, &export, writer).await;
        if let Err(e) = &result {
            tracing::warn!(loan_id = %export.loan, error = %format!("{e:#}"), "a borrower-file export stopped");
        }
        let _ = done_tx.send(result.is_ok());
    });
    // After the last byte: an error if the writer stopped early, which aborts the response.
    let outcome = futures::stream::once(async move {
        match done_rx.await {
            Ok(true) => None,
            _ => Some(Err(std::io::Error::other("the export stopped"))),
        }
    })
    .filter_map(std::future::ready);
    axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(reader).chain(outcome))
}

async fn write_zip(
    state: &AppState,
    export: &Export,
    writer: tokio::io::DuplexStream,
) -> anyhow::Result<()> {
    let mut zip = ZipFileWriter::with_tokio(writer);
    zip.write_entry_whole(
        ZipEntryBuilder::new("file.json".to_owned().into(), Compression::Stored),
        &export.summary,
    )
    .await?;
    for (id, name) in &export.entries {
        let bytes = crate::documents::lifecycle::plaintext(state, export.lead, *id)
            .await
            .map_err(|e| anyhow::anyhow!("document {id}: {e}"))?;
        zip.write_entry_whole(
            ZipEntryBuilder::new(name.clone().into(), Compression::Stored),
            &bytes,
        )
        .await?;
    }
    zip.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_stay_inside_documents_and_keep_the_id() {
        let id = Uuid::nil();
        assert_eq!(
            entry_name(id, "W-2 2025.pdf"),
            format!("documents/{id}-W-2_2025.pdf")
        );
        let climbing = entry_name(id, "../../etc/passwd");
        assert!(
            !climbing.contains('/') || climbing.matches('/').count() == 1,
            "{climbing}"
        );
        assert!(!climbing.contains(".."), "{climbing}");
        assert!(entry_name(id, "a\u{0}b\nc").ends_with("a_b_c"));
        assert!(entry_name(id, &"x".repeat(500)).len() < 160);
    }
}
