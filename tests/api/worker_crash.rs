//! kill -9 of the `loanfolio worker` process in the middle of a batch: after a restart every
//! document ends `available` exactly once, the quarantine bucket ends empty, and the
//! documents bucket holds exactly the available documents' encrypted copies.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::{TestApp, oidc, stack_config_path};
use crate::loans::agent_a1_loan;

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
        .map(|i| {
            let (app, token, loan) = (&app, token.clone(), loan.clone());
            async move {
                let pdf = format!("%PDF-1.7\n% statement {i}\n{}\n%%EOF\n", "x".repeat(20_000 + i))
                    .into_bytes();
                let upload: Value = app
                    .create(
                        &token,
                        &format!("/v1/loans/{loan}/documents"),
                        &json!({"filename": format!("s{i}.pdf"), "content_type": "application/pdf", "size_bytes": pdf.len(), "doc_type": "bank_statement"}),
                    )
                    .await
                    .json()
                    .await
                    .unwrap();
                let put = reqwest::Client::new()
                    .put(upload["upload"]["url"].as_str().unwrap())
        .header("content-type", upload["upload"]["headers"]["Content-Type"].as_str().unwrap())
                    .body(pdf)
                    .send()
                    .await
                    .unwrap();
                assert!(put.status().is_success());
                let id = upload["document"]["id"].as_str().unwrap().to_owned();
                let done = app
                    .client
                    .post(app.url(&format!("/v1/documents/{id}/complete")))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(done.status(), 202);
                id
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(ids.len(), DOCUMENTS);

    let mut worker = spawn_worker(&app);
    let before_kill = wait_for_available(&app, 25, Duration::from_secs(60)).await;
    worker.kill().unwrap(); // SIGKILL: no shutdown path runs
    worker.wait().unwrap();
    assert!(
        (25..DOCUMENTS as i64).contains(&before_kill),
        "the worker was killed mid-batch ({before_kill} available)"
    );

    let mut worker = spawn_worker(&app);
    let after = wait_for_available(&app, DOCUMENTS as i64, Duration::from_secs(120)).await;
    // One sweep of the reconciler, as the restarted worker would run it, for a quarantine
    // copy whose clean-up the kill interrupted.
    loanfolio::documents::reconciler::sweep(&app.state)
        .await
        .unwrap();
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert_eq!(after, DOCUMENTS as i64, "every document ends available");

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
