//! kill -9 of the `loanfolio worker` process in the middle of a batch: after a restart every
//! document ends `available` exactly once, the quarantine bucket ends empty, and the
//! documents bucket holds exactly the available documents' encrypted copies.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::helpers::flows::agent_a1_loan;
use crate::helpers::flows::{self, Announced};
use crate::helpers::{TestApp, oidc, stack_config_path};

const DOCUMENTS: usize = 100;

/// `loanfolio worker` as its own process, on this test's database, queues and buckets.
fn spawn_worker(app: &TestApp) -> Child {
    let settings = &app.state.settings;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join(format!("{}.worker.log", settings.rabbitmq.prefix)))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_loanfolio"))
        .arg("--config")
        .arg(stack_config_path())
        .arg("worker")
        .env(
            "LOANFOLIO__DATABASE__URL",
            settings.database.url().unwrap().expose_secret(),
        )
        .env("LOANFOLIO__RABBITMQ__PREFIX", &settings.rabbitmq.prefix)
        .env("LOANFOLIO__REDIS__KEY_PREFIX", &settings.redis.key_prefix)
        .env(
            "LOANFOLIO__S3__QUARANTINE_BUCKET",
            &settings.s3.quarantine_bucket,
        )
        .env(
            "LOANFOLIO__S3__DOCUMENTS_BUCKET",
            &settings.s3.documents_bucket,
        )
        .env("LOANFOLIO__WORKER__ADMIN_LISTEN", "127.0.0.1:0")
        .env("LOANFOLIO__LOG__FORMAT", "json")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn loanfolio worker")
}

async fn count_available(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from documents where state = 'available'")
        .fetch_one(&app.state.db)
        .await
        .unwrap()
}

async fn wait_for_available(app: &TestApp, at_least: i64, within: Duration) -> i64 {
    let start = Instant::now();
    loop {
        let n = count_available(app).await;
        if n >= at_least || start.elapsed() > within {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn keys(store: &dyn ObjectStore) -> Vec<String> {
    store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

/// Upload `i` PUT to quarantine and completed: its document's id.
async fn upload_completed(app: &TestApp, token: &str, loan: &str, i: usize) -> String {
    let pdf = format!(
        "%PDF-1.7\n% statement {i}\n{}\n%%EOF\n",
        "x".repeat(20_000 + i)
    )
    .into_bytes();
    let announced: Announced = app
        .create(
            token,
            &format!("/v1/loans/{loan}/documents"),
            &json!({"filename": format!("s{i}.pdf"), "content_type": "application/pdf", "size_bytes": pdf.len(), "doc_type": "bank_statement"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let put = flows::put(&announced.upload, pdf).await;
    assert!(put.status().is_success());
    let id = announced.document.id;
    let done = app
        .client
        .post(app.url(&format!("/v1/documents/{id}/complete")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 202);
    id
}

/// Kills a first worker once at least 25 documents are available; how many were.
async fn kill_a_worker_mid_batch(app: &TestApp) -> i64 {
    let mut worker = spawn_worker(app);
    let before_kill = wait_for_available(app, 25, Duration::from_secs(60)).await;
    worker.kill().unwrap(); // SIGKILL: no shutdown path runs
    worker.wait().unwrap();
    before_kill
}

/// A restarted worker's run until every document is available (or two minutes pass); how
/// many are.
async fn run_a_restarted_worker(app: &TestApp) -> i64 {
    let mut worker = spawn_worker(app);
    let after = wait_for_available(app, DOCUMENTS as i64, Duration::from_secs(120)).await;
    // One sweep of the reconciler, as the restarted worker would run it, for a quarantine
    // copy whose clean-up the kill interrupted.
    loanfolio::documents::reconciler::sweep(&app.state)
        .await
        .unwrap();
    worker.kill().unwrap();
    worker.wait().unwrap();
    after
}

async fn assert_every_document_available_exactly_once(app: &TestApp) {
    let states: Vec<(String, i64)> =
        sqlx::query_as("select state, count(*) from documents group by state")
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    assert_eq!(states, vec![("available".to_owned(), DOCUMENTS as i64)]);
    // Exactly once: one decision, one audit row and one event per document.
    let per_document: Vec<(i64, i64)> = sqlx::query_as(
        "select (select count(*) from audit_log a where a.entity_id = d.id and a.action = 'document.available'),
                (select count(*) from outbox o where o.topic = 'doc.available' and o.payload->>'documentId' = d.id::text)
           from documents d",
    )
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    assert!(
        per_document
            .iter()
            .all(|&(audit, events)| audit == 1 && events == 1),
        "{per_document:?}"
    );
}

async fn assert_the_buckets_hold_only_the_available_copies(app: &TestApp) {
    assert!(
        keys(app.state.storage.quarantine.as_ref()).await.is_empty(),
        "quarantine is empty"
    );
    let mut stored = keys(app.state.storage.documents.as_ref()).await;
    stored.sort();
    let mut expected: Vec<String> =
        sqlx::query_scalar("select object_key from documents where state = 'available'")
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    expected.sort();
    assert_eq!(
        stored, expected,
        "no orphan objects in the documents bucket"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_batch_loses_and_duplicates_nothing() {
    // The API only: the pipeline runs in the separate worker process.
    let app = crate::helpers::app()
        .settings(|s| {
            // 200 requests in a burst from one agent: not what this test is about.
            s.rate_limit.api_per_principal = 10_000;
            s.rate_limit.api_per_ip = 10_000;
        })
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;

    // 100 uploads PUT to quarantine and completed before any worker runs.
    let ids: Vec<String> = futures::stream::iter(0..DOCUMENTS)
        .map(|i| upload_completed(&app, &token, &loan, i))
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(ids.len(), DOCUMENTS);

    let before_kill = kill_a_worker_mid_batch(&app).await;
    assert!(
        (25..DOCUMENTS as i64).contains(&before_kill),
        "the worker was killed mid-batch ({before_kill} available)"
    );
    let after = run_a_restarted_worker(&app).await;
    assert_eq!(after, DOCUMENTS as i64, "every document ends available");

    assert_every_document_available_exactly_once(&app).await;
    assert_the_buckets_hold_only_the_available_copies(&app).await;

    // And every copy decrypts to its original.
    let sample = &ids[0];
    let content = app
        .client
        .get(app.url(&format!("/v1/documents/{sample}/content")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(content.status(), 200);
}
