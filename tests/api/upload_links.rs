//! Borrower upload links: created with a one-time token (only its hash stored), listed,
//! revoked; the public state route answers 404/410 per the contract; the token never
//! reaches the logs.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::flows::agent_a1_loan;
use crate::helpers::{TestApp, assert_problem, oidc, spawn_app};

async fn create_link(app: &TestApp, token: &str, loan: &str, body: Value) -> reqwest::Response {
    app.create(token, &format!("/v1/loans/{loan}/upload-links"), &body)
        .await
}

#[tokio::test]
async fn links_are_capabilities_shown_once() {
    let app = spawn_app().await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let response = create_link(
        &app,
        &token,
        &loan,
        json!({"borrower_email": "Borrower@Example.org", "max_files": 5}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let link: Value = response.json().await.unwrap();
    let secret = link["token"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 43, "256-bit token");
    assert_eq!(
        link["url"],
        format!(
            "{}/u/{secret}",
            app.state
                .settings
                .server
                .public_base_url
                .as_str()
                .trim_end_matches('/')
        )
    );
    assert_eq!(link["max_files"], 5);
    assert_eq!(link["borrower_email"], "borrower@example.org");

    let list: Value = app
        .client
        .get(app.url(&format!("/v1/loans/{loan}/upload-links")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(
        !list.to_string().contains(&secret),
        "the token is shown once"
    );

    let state: Value = app
        .get(&format!("/v1/public/upload-links/{secret}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(state["state"], "active");
    assert_eq!(state["agent"], "Avery Agent");

    // Only the hash is stored, the email is encrypted, and the token is in no log line.
    let rows: Vec<(Vec<u8>, Option<Vec<u8>>)> =
        sqlx::query_as("select token_hash, borrower_email_enc from upload_links")
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    assert!(!String::from_utf8_lossy(&rows[0].0).contains(&secret));
    assert!(!String::from_utf8_lossy(rows[0].1.as_ref().unwrap()).contains("example.org"));
    assert!(!app.logs.text().contains(&secret), "token in the logs");
}

/// Tokens that match no link, the real one cut short included: 404 on the API and on the
/// page.
async fn assert_unknown_tokens_are_not_found(app: &TestApp, secret: &str) {
    for unknown in [
        "nope",
        "x",
        &"a".repeat(1000),
        "..%2F..%2Fetc",
        &secret[..secret.len() - 1],
    ] {
        let response = app.get(&format!("/v1/public/upload-links/{unknown}")).await;
        assert_eq!(response.status(), 404, "{unknown}");
        assert_problem(response, StatusCode::NOT_FOUND, "link_not_found").await;
        // The page too answers 404 for a link that does not exist (with the friendly page).
        let page = app.get(&format!("/u/{unknown}")).await;
        assert_eq!(page.status(), 404, "/u/{unknown}");
        assert!(
            page.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
}

/// Others cannot revoke it; compliance sees it but may not; once the owner has, it is gone.
async fn assert_only_the_owner_revokes(app: &TestApp, token: &str, id: &str, secret: &str) {
    let b1 = oidc::access_token("agent-b1").await;
    let compliance = oidc::access_token("compliance").await;
    let revoke = |t: String| {
        let request = app
            .client
            .delete(app.url(&format!("/v1/upload-links/{id}")))
            .bearer_auth(t);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(revoke(b1).await, 404);
    assert_eq!(revoke(compliance).await, 403);
    assert_eq!(revoke(token.to_owned()).await, 204);
    let response = app.get(&format!("/v1/public/upload-links/{secret}")).await;
    assert_problem(response, StatusCode::GONE, "link_revoked").await;
}

async fn assert_an_expired_link_is_gone(app: &TestApp, token: &str, loan: &str) {
    let link: Value = create_link(app, token, loan, json!({"expires_in_hours": 1}))
        .await
        .json()
        .await
        .unwrap();
    sqlx::query("update upload_links set expires_at = now() - interval '1 minute' where id = $1")
        .bind(uuid::Uuid::parse_str(link["id"].as_str().unwrap()).unwrap())
        .execute(&app.state.db)
        .await
        .unwrap();
    let response = app
        .get(&format!(
            "/v1/public/upload-links/{}",
            link["token"].as_str().unwrap()
        ))
        .await;
    assert_problem(response, StatusCode::GONE, "link_expired").await;
}

#[tokio::test]
async fn expired_revoked_and_unknown_links() {
    let app = spawn_app().await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let link: Value = create_link(&app, &token, &loan, json!({}))
        .await
        .json()
        .await
        .unwrap();
    let secret = link["token"].as_str().unwrap();
    let id = link["id"].as_str().unwrap();

    assert_unknown_tokens_are_not_found(&app, secret).await;
    assert_eq!(app.get(&format!("/u/{secret}")).await.status(), 200);
    assert_only_the_owner_revokes(&app, &token, id, secret).await;
    assert_an_expired_link_is_gone(&app, &token, &loan).await;

    assert_eq!(
        create_link(&app, &token, &loan, json!({"expires_in_hours": 0}))
            .await
            .status(),
        422
    );
    assert_eq!(
        create_link(&app, &token, &loan, json!({"max_files": 1000}))
            .await
            .status(),
        422
    );
}

/// Defect: announcing a file read the link's count without a lock, so concurrent
/// announcements on a `max_files = 1` link each created a document.
#[tokio::test]
async fn concurrent_announcements_never_overrun_max_files() {
    let app = crate::helpers::app()
        .settings(|s| {
            s.rate_limit.public_per_ip = 1000;
            s.rate_limit.public_per_token = 1000;
        })
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let link: Value = create_link(&app, &token, &loan, json!({"max_files": 1}))
        .await
        .json()
        .await
        .unwrap();
    let secret = link["token"].as_str().unwrap();
    let url = app.url(&format!("/v1/public/upload-links/{secret}/files"));
    let announce = |i: usize| {
        app.client
            .post(&url)
            .json(&json!({"filename": format!("page-{i}.pdf"), "content_type": "application/pdf", "size_bytes": 1000}))
            .send()
    };
    let answers = futures::future::join_all((0..20).map(announce)).await;
    let mut statuses: Vec<u16> = answers
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 410),
        "{statuses:?}"
    );
    let documents: i64 = sqlx::query_scalar("select count(*) from documents")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(documents, 1);
}

/// Defect: `token_enc` kept tokens decryptable after revocation or expiry, and a link made
/// without an address had no recipient (so the lead's newest link was mailed instead).
#[tokio::test]
async fn a_links_token_is_kept_only_for_its_recipient_and_only_while_it_lives() {
    let app = spawn_app().await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let sealed = |id: String| {
        let db = app.state.db.clone();
        async move {
            sqlx::query_scalar::<_, Option<Vec<u8>>>(
                "select token_enc from upload_links where id = $1::uuid",
            )
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    // Without an address the link goes to the borrower's own.
    let own: Value = create_link(&app, &token, &loan, json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(own["borrower_email"], crate::helpers::flows::EMAIL);
    let own_id = own["id"].as_str().unwrap().to_owned();
    assert!(sealed(own_id.clone()).await.is_some());
    // Revoked: the sealed token is gone at once.
    let revoked = app
        .client
        .delete(app.url(&format!("/v1/upload-links/{own_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert!(sealed(own_id).await.is_none(), "revocation wipes the token");

    // Expired: housekeeping wipes it; a full link (a rejection could reopen it) keeps it.
    let expiring: Value = create_link(
        &app,
        &token,
        &loan,
        json!({"borrower_email": "co@example.org"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let expiring_id = expiring["id"].as_str().unwrap().to_owned();
    let full: Value = create_link(&app, &token, &loan, json!({"max_files": 1}))
        .await
        .json()
        .await
        .unwrap();
    let full_id = full["id"].as_str().unwrap().to_owned();
    let announced = app
        .client
        .post(app.url(&format!(
            "/v1/public/upload-links/{}/files",
            full["token"].as_str().unwrap()
        )))
        .json(&json!({"filename": "a.pdf", "content_type": "application/pdf", "size_bytes": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(announced.status(), 201);
    sqlx::query(
        "update upload_links set expires_at = now() - interval '1 second' where id = $1::uuid",
    )
    .bind(&expiring_id)
    .execute(&app.state.db)
    .await
    .unwrap();
    loanfolio::admin::housekeeping::sweep(&app.state)
        .await
        .unwrap();
    assert!(
        sealed(expiring_id).await.is_none(),
        "expiry wipes the token"
    );
    assert!(sealed(full_id).await.is_some(), "a full link may reopen");
}

const PDF: &[u8] = b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<< /Root 1 0 R >>\n%%EOF\n";

/// A file announced through link `secret`: the document and its pre-signed upload.
async fn announce_pdf(app: &TestApp, secret: &str) -> Value {
    app.client
        .post(app.url(&format!("/v1/public/upload-links/{secret}/files")))
        .json(&json!({"filename": "p.pdf", "content_type": "application/pdf", "size_bytes": PDF.len()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn put_pdf(upload: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .put(upload["upload"]["url"].as_str().unwrap())
        .header("content-type", "application/pdf")
        .body(PDF.to_vec())
        .send()
        .await
        .unwrap()
}

fn assert_lives_at_most_5_minutes(upload: &Value) {
    let expires = time::OffsetDateTime::parse(
        upload["upload"]["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let lifetime = expires - time::OffsetDateTime::now_utc();
    assert!(lifetime <= time::Duration::seconds(300), "{lifetime}");
}

/// The (state, reason) of the announced document.
async fn document_state(app: &TestApp, upload: &Value) -> (String, Option<String>) {
    let id = upload["document"]["id"].as_str().unwrap();
    sqlx::query_as::<_, (String, Option<String>)>(
        "select state, reason from documents where id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.state.db)
    .await
    .unwrap()
}

/// Neither browser says `complete`: the reconciler finds both, completes the file written
/// before the revocation and rejects the one written after, keeping it in quarantine for
/// review, even after another round.
async fn assert_the_reconciler_rejects_and_keeps_the_late_one(
    app: &TestApp,
    before: &Value,
    after: &Value,
) {
    use object_store::ObjectStoreExt;
    sqlx::query("update documents set upload_expires_at = now() - interval '1 second'")
        .execute(&app.state.db)
        .await
        .unwrap();
    let swept = loanfolio::documents::reconciler::sweep(&app.state)
        .await
        .unwrap();
    assert_eq!((swept.completed, swept.link_revoked), (1, 1), "{swept:?}");
    assert_eq!(document_state(app, before).await, ("uploaded".into(), None));
    assert_eq!(
        document_state(app, after).await,
        ("rejected".into(), Some("link_revoked".into()))
    );
    loanfolio::documents::reconciler::sweep(&app.state)
        .await
        .unwrap();
    let kept = app
        .state
        .storage
        .quarantine
        .head(&object_store::path::Path::from(format!(
            "uploads/{}",
            after["document"]["id"].as_str().unwrap()
        )))
        .await;
    assert!(kept.is_ok(), "the late upload is kept in quarantine");
}

/// Defect: a borrower's pre-signed URL signed only the host, lived as long as an agent's,
/// and worked after the link was revoked. Now it lives at most 5 minutes, and the
/// reconciler completes only objects written before the revocation.
#[tokio::test]
async fn uploads_after_a_revocation_are_rejected_and_kept() {
    let app = crate::helpers::app()
        .settings(|s| s.documents.upload_url_ttl_secs = 900)
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let link: Value = create_link(&app, &token, &loan, json!({}))
        .await
        .json()
        .await
        .unwrap();
    let secret = link["token"].as_str().unwrap();
    let before = announce_pdf(&app, secret).await;
    let after = announce_pdf(&app, secret).await;
    assert_lives_at_most_5_minutes(&before);

    assert!(put_pdf(&before).await.status().is_success());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let revoked = app
        .client
        .delete(app.url(&format!(
            "/v1/upload-links/{}",
            link["id"].as_str().unwrap()
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // The URL itself still signs (S3 cannot know of the revocation)…
    assert!(put_pdf(&after).await.status().is_success());
    // …and the reconciler tells the two apart.
    assert_the_reconciler_rejects_and_keeps_the_late_one(&app, &before, &after).await;
}

/// Review finding: a borrower could say `complete` before the PUT, wait for the link's
/// revocation and then PUT with the still-valid URL, and the file was processed. Now
/// `complete` needs the file to have arrived, and the pipeline rejects (and keeps) an
/// object written after its link was revoked.
#[tokio::test]
async fn a_file_written_after_revocation_is_never_processed() {
    use object_store::ObjectStoreExt;
    let app = spawn_app().await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let link: Value = create_link(&app, &token, &loan, json!({}))
        .await
        .json()
        .await
        .unwrap();
    let secret = link["token"].as_str().unwrap();
    let pdf = b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<< /Root 1 0 R >>\n%%EOF\n".to_vec();
    let upload: Value = app
        .client
        .post(app.url(&format!("/v1/public/upload-links/{secret}/files")))
        .json(&json!({"filename": "p.pdf", "content_type": "application/pdf", "size_bytes": pdf.len()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = upload["document"]["id"].as_str().unwrap().to_owned();
    let complete = app.url(&format!(
        "/v1/public/upload-links/{secret}/files/{id}/complete"
    ));
    let early = app.client.post(&complete).send().await.unwrap();
    assert_eq!(early.status(), 409, "nothing has arrived yet");
    let put = || {
        reqwest::Client::new()
            .put(upload["upload"]["url"].as_str().unwrap())
            .header("content-type", "application/pdf")
            .body(pdf.clone())
            .send()
    };
    assert!(put().await.unwrap().status().is_success());
    assert_eq!(
        app.client.post(&complete).send().await.unwrap().status(),
        202
    );
    // Revoked before the pipeline ran; then the URL is used again to replace the file.
    let revoked = app
        .client
        .delete(app.url(&format!(
            "/v1/upload-links/{}",
            link["id"].as_str().unwrap()
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(put().await.unwrap().status().is_success());
    // Now a worker (same database and buckets) processes the queued event.
    use secrecy::ExposeSecret;
    let url = url::Url::parse(app.state.settings.database.url().unwrap().expose_secret()).unwrap();
    let s3 = &app.state.settings.s3;
    let _worker = crate::helpers::app()
        .shared_database(url.path().trim_start_matches('/').to_owned())
        .buckets(&s3.quarantine_bucket, &s3.documents_bucket)
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let decided = crate::helpers::eventually(30, || async {
        let row: (String, Option<String>) =
            sqlx::query_as("select state, reason from documents where id = $1::uuid")
                .bind(&id)
                .fetch_one(&app.state.db)
                .await
                .unwrap();
        row == ("rejected".to_owned(), Some("link_revoked".to_owned()))
    })
    .await;
    assert!(decided, "the late file is rejected link_revoked");
    let kept = app
        .state
        .storage
        .quarantine
        .head(&object_store::path::Path::from(format!("uploads/{id}")))
        .await;
    assert!(kept.is_ok(), "and kept in quarantine for review");
}

/// Review finding: the idempotency store kept a link's creation response — token included
/// — for 24 hours, past any revocation. A replay now answers without the token.
#[tokio::test]
async fn a_replayed_link_creation_never_shows_the_token_again() {
    let app = spawn_app().await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let key = uuid::Uuid::new_v4().to_string();
    let create = || {
        app.client
            .post(app.url(&format!("/v1/loans/{loan}/upload-links")))
            .bearer_auth(&token)
            .header("Idempotency-Key", &key)
            .json(&json!({"max_files": 2}))
            .send()
    };
    let first: Value = create().await.unwrap().json().await.unwrap();
    let secret = first["token"].as_str().unwrap().to_owned();
    let replay = create().await.unwrap();
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(replayed["id"], first["id"], "the same link");
    assert!(replayed.get("token").is_none(), "{replayed}");
    assert!(!replayed.to_string().contains(&secret), "{replayed}");
}
