//! Disposal by crypto-shredding (docs/operations/retention.md), with the clock controlled:
//! each round runs "as of" a date the test chooses (`disposal::run_round(state, at)`), so a
//! file is past its rule without waiting years. A lead without a loan past its period is
//! disposed; a closed loan inside its period is kept; a held file is kept until the hold is
//! lifted; the audit chain still verifies; nothing of the file is left in the database, the
//! buckets or the logs; a second process caching the file's key loses it to the broadcast.

use std::path::Path;

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::helpers::flows::{self, Client, full_lead, new_loan};
use crate::helpers::{TestApp, app, eventually, oidc};
use loanfolio::retention::disposal::{self, RoundSummary};

/// Settings with disposal on, its ledger in `ledger`.
pub(crate) fn disposing(ledger: &Path) -> impl FnOnce(&mut loanfolio::config::Settings) + use<> {
    let ledger = ledger.to_owned();
    move |s| {
        s.retention.enabled = true;
        s.retention.ledger_path = Some(ledger);
    }
}

/// One disposal round as of `days` from now.
pub(crate) async fn round_at(app: &TestApp, days: i64) -> RoundSummary {
    disposal::run_round(&app.state, OffsetDateTime::now_utc() + Duration::days(days))
        .await
        .unwrap()
        .expect("no other round runs in this test")
}

/// Move `loan` to `status` as `user` (with its current ETag).
pub(crate) async fn move_loan(app: &TestApp, user: &str, loan: &str, status: &str) {
    let token = oidc::access_token(user).await;
    let response = crate::loans::move_to(app, &token, loan, status).await;
    assert_eq!(response.status(), 200, "{loan} to {status} by {user}");
}

/// A lead of agent-a1 with a loan moved through `statuses` (by the agent, then its manager).
pub(crate) async fn file_with_loan(
    app: &TestApp,
    body: Value,
    statuses: &[&str],
) -> (String, String) {
    let token = oidc::access_token("agent-a1").await;
    let lead = flows::lead(app, "agent-a1", body).await.id;
    let loan: flows::Created = app
        .create(&token, "/v1/loans", &new_loan(&lead))
        .await
        .json()
        .await
        .unwrap();
    for status in statuses {
        let user = if matches!(*status, "underwriting" | "closed" | "denied") {
            "manager-a"
        } else {
            "agent-a1"
        };
        move_loan(app, user, &loan.id, status).await;
    }
    (lead, loan.id)
}

async fn status_of(app: &TestApp, path: &str) -> StatusCode {
    Client::new(app, "agent-a1").await.get(path).await.status()
}

/// The disposal's traces in the database: the lead blank, the wrapped key gone, the rule
/// recorded and audited; `None` while the file is live.
async fn disposed_rule(app: &TestApp, lead: &str) -> Option<String> {
    let id = Uuid::parse_str(lead).unwrap();
    let (first, last, email, wrapped): (String, String, Option<Vec<u8>>, Option<String>) =
        sqlx::query_as(
            "select l.first_name, l.last_name, l.email_enc, f.wrapped_dek
               from leads l join borrower_files f on f.id = l.id where l.id = $1",
        )
        .bind(id)
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    let rule: Option<String> = sqlx::query_scalar("select rule from disposals where lead_id = $1")
        .bind(id)
        .fetch_optional(&app.state.db)
        .await
        .unwrap();
    if rule.is_none() {
        assert!(
            wrapped.is_some() && !first.is_empty(),
            "a live file is whole"
        );
        return None;
    }
    assert_eq!((first.as_str(), last.as_str()), ("", ""), "names blanked");
    assert!(
        email.is_none() && wrapped.is_none(),
        "sealed fields and key gone"
    );
    assert!(
        app.state.file_key(id).await.is_err(),
        "no key to decrypt with"
    );
    let audited: Value = sqlx::query_scalar(
        "select details from audit_log where action = 'lead.disposed' and entity_id = $1",
    )
    .bind(id)
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(audited["rule"], json!(rule));
    rule
}

#[tokio::test]
async fn files_past_their_rules_are_disposed_and_held_or_young_ones_kept() {
    let ledger = tempfile::tempdir().unwrap();
    let ledger_path = ledger.path().join("disposals.jsonl");
    let app = app().settings(disposing(&ledger_path)).spawn().await;
    let compliance = oidc::access_token("compliance").await;
    let no_loan = flows::lead(&app, "agent-a1", full_lead()).await.id;
    let (closed_lead, closed_loan) =
        file_with_loan(&app, full_lead(), &["submitted", "underwriting", "closed"]).await;
    let held = flows::lead(&app, "agent-a1", full_lead()).await.id;
    let hold: Value = app
        .create(
            &compliance,
            "/v1/legal-holds",
            &json!({"entity_type": "lead", "entity_id": held, "reason": "Litigation hold"}),
        )
        .await
        .json()
        .await
        .unwrap();

    // Today nothing is due; in 800 days the lead without a loan (763) is, the closed loan
    // (2557) is not, and the held lead is kept whatever its rule says.
    assert_eq!(round_at(&app, 0).await.disposed, 0);
    assert_eq!(round_at(&app, 800).await.disposed, 1);
    assert_eq!(
        disposed_rule(&app, &no_loan).await.as_deref(),
        Some("leads_without_loan_days")
    );
    assert_eq!(disposed_rule(&app, &closed_lead).await, None);
    assert_eq!(disposed_rule(&app, &held).await, None);
    assert_eq!(status_of(&app, &format!("/v1/leads/{no_loan}")).await, 404);
    assert_eq!(
        status_of(&app, &format!("/v1/loans/{closed_loan}")).await,
        200
    );

    // Past the closed loan's period: it goes, with its statistics kept and bucketed.
    assert_eq!(round_at(&app, 2600).await.disposed, 1);
    assert_eq!(
        disposed_rule(&app, &closed_lead).await.as_deref(),
        Some("loans_closed_days")
    );
    assert_eq!(
        status_of(&app, &format!("/v1/loans/{closed_loan}")).await,
        404
    );
    let (status, amount): (String, String) =
        sqlx::query_as("select status, amount::text from loans where id = $1")
            .bind(Uuid::parse_str(&closed_loan).unwrap())
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!((status.as_str(), amount.as_str()), ("closed", "450000.00"));
    assert_eq!(disposed_rule(&app, &held).await, None, "still held");

    // The hold lifted, the next round takes it; a hold on a disposed file is refused.
    let lifted = app
        .client
        .delete(app.url(&format!("/v1/legal-holds/{}", hold["id"].as_str().unwrap())))
        .bearer_auth(&compliance)
        .send()
        .await
        .unwrap();
    assert_eq!(lifted.status(), 204);
    assert_eq!(round_at(&app, 800).await.disposed, 1);
    assert!(disposed_rule(&app, &held).await.is_some());
    let late_hold = app
        .create(
            &compliance,
            "/v1/legal-holds",
            &json!({"entity_type": "lead", "entity_id": no_loan, "reason": "Too late"}),
        )
        .await;
    assert_eq!(late_hold.status(), 404);

    the_chain_the_ledger_and_the_events_hold_all_three(
        &app,
        &ledger_path,
        &[&no_loan, &closed_lead, &held],
    )
    .await;
}

async fn the_chain_the_ledger_and_the_events_hold_all_three(
    app: &TestApp,
    ledger: &Path,
    leads: &[&str],
) {
    let (rows, broken) = loanfolio::audit::verify(&app.state.db).await.unwrap();
    assert!(rows > 0 && broken.is_none(), "audit chain: {broken:?}");
    let entries = loanfolio::retention::ledger::read(ledger).unwrap();
    let mut ledgered: Vec<String> = entries.iter().map(|e| e.file_id.to_string()).collect();
    let mut expected: Vec<String> = leads.iter().map(|l| (*l).to_owned()).collect();
    ledgered.sort();
    expected.sort();
    assert_eq!(
        ledgered, expected,
        "every disposal is in the outside ledger"
    );
    let text = std::fs::read_to_string(ledger).unwrap();
    assert!(
        !text.contains("Canary") && !text.contains("Casey"),
        "ids only: {text}"
    );
    let events: Vec<Value> =
        sqlx::query_scalar("select payload from outbox where topic = 'file.disposed'")
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|e| e.as_object().unwrap().keys().eq(["leadId"])),
        "{events:?}"
    );
}

/// After record-level disposal the file is live: its loan, documents (the disposed one
/// closed and nameless), notifications and export all still answer.
async fn the_loan_still_reads_with_the_records_disposed(
    app: &TestApp,
    token: &str,
    loan: &str,
    rejected: &str,
) {
    let agent = Client::new(app, "agent-a1").await;
    let documents: Value = agent
        .get(&format!("/v1/loans/{loan}/documents"))
        .await
        .json()
        .await
        .unwrap();
    let disposed = documents["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == rejected)
        .unwrap_or_else(|| panic!("{documents}"));
    assert_eq!(
        (disposed["state"].as_str(), disposed["filename"].as_str()),
        (Some("deleted"), Some("(disposed)"))
    );
    let notifications = agent.get(&format!("/v1/loans/{loan}/notifications")).await;
    assert_eq!(notifications.status(), 200);
    let export = app
        .client
        .get(app.url(&format!("/v1/loans/{loan}/export")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    assert!(!export.bytes().await.unwrap().is_empty());
    let page = format!("/console/loans/{loan}");
    let console = crate::console::signed_in(app, "agent-a1", &page).await;
    let (status, html) = crate::console::page(&console, app, &page).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("(disposed)"),
        "the disposed document is listed as such"
    );
}

/// How many audit rows `action` wrote on the entity `id`.
async fn audited(app: &TestApp, action: &str, id: &str) -> i64 {
    sqlx::query_scalar("select count(*) from audit_log where action = $1 and entity_id = $2")
        .bind(action)
        .bind(Uuid::parse_str(id).unwrap())
        .fetch_one(&app.state.db)
        .await
        .unwrap()
}

/// A name of letters only (names are validated), unique to this run.
fn unique_name(prefix: &str) -> String {
    let letters: String = Uuid::now_v7()
        .simple()
        .to_string()
        .chars()
        .rev()
        .take(10)
        .map(|c| char::from(b'a' + (c.to_digit(16).unwrap() as u8)))
        .collect();
    format!("{prefix}{letters}")
}

/// Every object of both buckets whose bytes contain one of `forms`.
async fn bucket_hits(app: &TestApp, forms: &[String]) -> Vec<String> {
    let storage = &app.state.storage;
    let mut hits = Vec::new();
    for (name, store) in [
        ("quarantine", &storage.quarantine),
        ("documents", &storage.documents),
    ] {
        let objects: Vec<_> = store.list(None).try_collect().await.unwrap();
        for meta in objects {
            let bytes = store
                .get(&meta.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for form in forms {
                if text.contains(form.as_str()) {
                    hits.push(format!("{name}/{} contains {form}", meta.location));
                }
            }
        }
    }
    hits
}

#[tokio::test]
async fn a_disposed_file_leaves_no_canary_in_the_database_the_buckets_or_the_logs() {
    let ledger = tempfile::tempdir().unwrap();
    let app = app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .settings(disposing(&ledger.path().join("disposals.jsonl")))
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let (first, last) = (unique_name("Quill"), unique_name("Marrow"));
    let mut body = full_lead();
    body["first_name"] = json!(first);
    body["last_name"] = json!(last);
    let (lead, loan) = file_with_loan(&app, body, &[]).await;
    let mut forms = crate::pii::canary_forms();
    forms.extend([first.clone(), last.clone()]);

    // A scanned document, and an upload left in quarantine (plaintext until processed),
    // both carrying the SSN in their bytes.
    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.extend_from_slice(format!("SSN {} ", flows::SSN).as_bytes());
    pdf.extend(crate::documents::sample(b"", 7, 40_000));
    let done =
        crate::documents::upload(&app, &token, &loan, &pdf, "application/pdf", pdf.len()).await;
    assert_eq!(
        crate::documents::settled(&app, &token, &done).await["state"],
        "available"
    );
    let link = flows::link(&app, &token, &loan, &json!({})).await;
    let announce =
        json!({"filename": "w2.pdf", "content_type": "application/pdf", "size_bytes": pdf.len()});
    let pending = flows::borrower_put(&app, &link.token, &announce, &pdf).await;
    move_loan(&app, "agent-a1", &loan, "withdrawn").await;

    // Positive controls: the scans find the names in the database and the plaintext upload.
    let before = crate::pii::scan_for(&app.state.db, &forms).await;
    assert!(before.iter().any(|h| h.contains(&first)), "{before:?}");
    let in_buckets = bucket_hits(&app, &forms).await;
    assert!(
        in_buckets.iter().any(|h| h.contains(&pending)),
        "{in_buckets:?}"
    );

    assert_eq!(round_at(&app, 1200).await.disposed, 1);
    assert!(disposed_rule(&app, &lead).await.is_some());
    for path in [
        format!("/v1/documents/{done}"),
        format!("/v1/documents/{done}/content"),
        format!("/v1/loans/{loan}/documents"),
        format!("/v1/loans/{loan}/upload-links"),
        format!("/v1/credit-report/{lead}"),
    ] {
        assert_eq!(status_of(&app, &path).await, 404, "{path}");
    }
    let found = crate::pii::scan_for(&app.state.db, &forms).await;
    assert!(found.is_empty(), "left in the database: {found:#?}");
    let found = bucket_hits(&app, &forms).await;
    assert!(found.is_empty(), "left in the buckets: {found:#?}");
    let documents = crate::vault::documents_bucket(&app).await;
    assert!(
        documents.is_empty(),
        "the encrypted objects are deleted too: {documents:?}"
    );
    let logs = app.logs.text();
    assert!(logs.contains("request finished"), "logs were captured");
    for form in &forms {
        assert!(!logs.contains(form.as_str()), "{form} in the logs");
    }
}

#[tokio::test]
async fn a_second_process_caching_the_key_loses_it_to_the_disposal_broadcast() {
    let ledger = tempfile::tempdir().unwrap();
    let api = app()
        .workers_only(&[])
        .settings(disposing(&ledger.path().join("disposals.jsonl")))
        .spawn()
        .await;
    let db: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&api.state.db)
        .await
        .unwrap();
    let worker = app()
        .role(loanfolio::state::Role::Worker)
        .workers_only(&[])
        .shared_database(db)
        .shared_broker(&api.state.settings.rabbitmq.prefix)
        .buckets(
            &api.state.settings.s3.quarantine_bucket,
            &api.state.settings.s3.documents_bucket,
        )
        .spawn()
        .await;
    let lead = flows::lead(&api, "agent-a1", full_lead()).await.id;
    let id = Uuid::parse_str(&lead).unwrap();
    // The worker reads the file's key once: from now on it answers from its cache, without
    // asking the database.
    let key = worker.state.file_key(id).await.unwrap();
    let sealed: Vec<u8> = sqlx::query_scalar("select email_enc from leads where id = $1")
        .bind(id)
        .fetch_one(&worker.state.db)
        .await
        .unwrap();
    let at = loanfolio::crypto::field::Location {
        table: "leads",
        column: "email_enc",
        row: id,
    };
    assert!(loanfolio::crypto::field::decrypt(&key, at, &sealed).is_ok());
    drop(key);
    // Its broadcast queue is bound once the listener has connected.
    assert!(eventually(10, || async { worker.state.file_key(id).await.is_ok() }).await);

    assert_eq!(round_at(&api, 800).await.disposed, 1);
    // The disposing process forgot the key at once; the worker, when the broadcast arrives
    // (well before the cache's five-minute expiry).
    assert!(api.state.file_key(id).await.is_err());
    assert!(
        eventually(10, || async { worker.state.file_key(id).await.is_err() }).await,
        "the worker still holds the disposed file's key"
    );
}

#[tokio::test]
async fn rejected_documents_and_sent_notifications_go_under_their_own_rules() {
    let ledger = tempfile::tempdir().unwrap();
    let smtp = crate::helpers::smtp::PrivateSmtp::start().await;
    let app = app()
        .workers_only(&["document-pipeline", "notifier"])
        .settings(|s| smtp.configure(s))
        .settings(disposing(&ledger.path().join("disposals.jsonl")))
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let (lead, loan) = file_with_loan(&app, full_lead(), &[]).await;
    let pdf = crate::documents::sample(b"%PDF-1.7\n%", 9, 30_000);
    let rejected =
        crate::documents::upload(&app, &token, &loan, &pdf, "application/pdf", pdf.len()).await;
    assert_eq!(
        crate::documents::settled(&app, &token, &rejected).await["state"],
        "available"
    );
    let review = app
        .create(
            &token,
            &format!("/v1/documents/{rejected}/review"),
            &json!({"decision": "reject", "reason": "Page 2 is missing"}),
        )
        .await;
    assert!(
        review.status().is_success(),
        "{}",
        review.text().await.unwrap()
    );
    flows::link(&app, &token, &loan, &json!({})).await;
    let sent = || async {
        let (sent, queued): (i64, i64) = sqlx::query_as(
            "select count(*) filter (where state = 'sent' and template = 'link_invitation'),
                    count(*) filter (where state = 'queued')
               from notifications",
        )
        .fetch_one(&app.state.db)
        .await
        .unwrap();
        sent > 0 && queued == 0
    };
    assert!(eventually(20, sent).await, "the invitation was sent");

    // In 800 days the loan is still open, so the file stays; the rejected document (763)
    // and the notifications (763) go on their own.
    let summary = round_at(&app, 800).await;
    assert_eq!((summary.disposed, summary.documents), (0, 1));
    assert!(summary.notifications >= 1);
    assert_eq!(disposed_rule(&app, &lead).await, None);
    let (name, disposed): (Vec<u8>, bool) =
        sqlx::query_as("select filename_enc, disposed_at is not null from documents where id = $1")
            .bind(Uuid::parse_str(&rejected).unwrap())
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert!(name.is_empty() && disposed);
    let objects = crate::vault::documents_bucket(&app).await;
    assert!(
        objects.is_empty(),
        "the rejected document's object is deleted: {objects:?}"
    );
    let live: i64 = sqlx::query_scalar(
        "select count(*) from notifications
          where state <> 'queued' and (disposed_at is null or length(recipient_enc) > 0)",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(live, 0, "every sent notification's recipient is gone");
    assert_eq!(audited(&app, "document.disposed", &rejected).await, 1);
    the_loan_still_reads_with_the_records_disposed(&app, &token, &loan, &rejected).await;
    // A second round finds nothing more to do.
    assert_eq!(round_at(&app, 800).await, RoundSummary::default());
}
