//! Documents, first part: an agent's upload goes straight to the quarantine bucket by a
//! pre-signed PUT from outside the service; `complete` moves it to `uploaded` with its event.

use object_store::ObjectStoreExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest;

use crate::helpers::flows::agent_a1_loan;
use crate::helpers::flows::{self, Announced};
use crate::helpers::{TestApp, assert_problem, oidc, spawn_app};

async fn announce(app: &TestApp, token: &str, loan: &str, body: Value) -> reqwest::Response {
    app.create(token, &format!("/v1/loans/{loan}/documents"), &body)
        .await
}

#[tokio::test]
async fn a_presigned_put_then_complete() {
    presigned_put_then_complete(spawn_app().await).await;
}

#[tokio::test]
async fn a_presigned_put_then_complete_on_garage() {
    let app = crate::helpers::app()
        .settings(crate::helpers::garage::use_garage)
        .spawn()
        .await;
    presigned_put_then_complete(app).await;
}

/// Browsers read the upload's answer only when the storage server allows the page's
/// origin. Garage answers the actual PUT with the bucket's CORS rule: none before
/// `allow_browser_uploads`, the service's origin after it, never another origin.
#[tokio::test]
async fn garage_allows_browser_uploads_from_the_service_origin_only() {
    let app = crate::helpers::app()
        .settings(crate::helpers::garage::use_garage)
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let origin = "https://loanfolio.lender.example";
    let pdf = b"%PDF-1.7\n%%EOF\n".to_vec();
    let put_from = |origin: &'static str| {
        let (app, token, loan, pdf) = (&app, token.clone(), loan.clone(), pdf.clone());
        async move {
            let upload: Value = announce(app, &token, &loan, json!({
                "filename": "a.pdf", "content_type": "application/pdf", "size_bytes": pdf.len(), "doc_type": "other"
            }))
            .await
            .json()
            .await
            .unwrap();
            let put = reqwest::Client::new()
                .put(upload["upload"]["url"].as_str().unwrap())
                .header("content-type", "application/pdf")
                .header("origin", origin)
                .body(pdf)
                .send()
                .await
                .unwrap();
            assert!(put.status().is_success(), "{}", put.status());
            put.headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap().to_owned())
        }
    };
    assert_eq!(
        put_from(origin).await,
        None,
        "no rule yet: browsers may not read it"
    );
    assert!(
        app.state
            .storage
            .allow_browser_uploads(origin)
            .await
            .unwrap()
            == loanfolio::storage::CorsOutcome::Set
    );
    assert_eq!(put_from(origin).await.as_deref(), Some(origin));
    assert_eq!(put_from("https://evil.example").await, None);
}

/// A least-privilege key (read and write, not the bucket's owner) may not set bucket CORS:
/// `allow_browser_uploads` reports it (create-buckets then says to ask the storage
/// administrator) instead of failing.
#[tokio::test]
async fn a_key_without_owner_rights_is_told_to_ask_for_cors() {
    use crate::helpers::garage;
    let mut settings = crate::helpers::base_settings();
    garage::use_garage(&mut settings);
    let bucket = format!("lf-cors-{}", crate::helpers::unique_id());
    let created = garage::admin("CreateBucket", Some(json!({ "globalAlias": bucket }))).await;
    garage::admin(
        "AllowBucketKey",
        Some(json!({
            "bucketId": created["id"], "accessKeyId": settings.s3.access_key_id,
            "permissions": {"read": true, "write": true, "owner": false}
        })),
    )
    .await;
    settings.s3.quarantine_bucket = bucket;
    let storage = loanfolio::storage::Storage::new(&settings.s3).unwrap();
    assert_eq!(
        storage
            .allow_browser_uploads("https://loanfolio.lender.example")
            .await
            .unwrap(),
        loanfolio::storage::CorsOutcome::Denied
    );
}

async fn assert_url_scoped_to_size_type_and_signature(url: &str, pdf: &[u8]) {
    let pdf = pdf.to_vec();
    // The URL is scoped to the announced size and type: the storage server refuses any
    // other (both are signed into it; before, only the host was).
    let signed = url::Url::parse(url).unwrap();
    let signed_headers = signed
        .query_pairs()
        .find(|(k, _)| k == "X-Amz-SignedHeaders")
        .map(|(_, v)| v.into_owned());
    assert_eq!(
        signed_headers.as_deref(),
        Some("content-length;content-type;host")
    );
    let mut longer = pdf.clone();
    longer.extend_from_slice(b"appended");
    for (body, content_type) in [
        (longer, "application/pdf"),
        (pdf[..pdf.len() - 1].to_vec(), "application/pdf"),
        (pdf.clone(), "image/png"),
    ] {
        let put = reqwest::Client::new()
            .put(url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 403, "another size or type is refused");
    }

    // A tampered signature is refused by the storage server itself.
    let tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    let put = reqwest::Client::new()
        .put(&tampered)
        .body(pdf.clone())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_client_error(), "{}", put.status());
}

async fn presigned_put_then_complete(app: TestApp) {
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let pdf = b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n".to_vec();
    let response = announce(
        &app,
        &token,
        &loan,
        json!({
            "filename": "../W2 2025\u{202E}fdp.pdf", "content_type": "application/pdf",
            "size_bytes": pdf.len(), "doc_type": "w2"
        }),
    )
    .await;
    assert_eq!(response.status(), 201);
    let upload: Value = response.json().await.unwrap();
    let document = &upload["document"];
    assert_eq!(document["state"], "awaiting_upload");
    assert_eq!(document["filename"], "W2 2025fdp.pdf");
    assert_eq!(document["uploaded_by"], "agent");
    assert_eq!(upload["upload"]["method"], "PUT");
    let url = upload["upload"]["url"].as_str().unwrap();
    assert!(
        !url.contains("W2"),
        "object keys carry ids, never names: {url}"
    );

    // The borrower's or agent's client PUTs straight to storage; the service never sees it.
    let put = reqwest::Client::new()
        .put(url)
        .header("content-type", "application/pdf")
        .body(pdf.clone())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let id = document["id"].as_str().unwrap();
    let stored = app
        .state
        .storage
        .quarantine
        .get(&object_store::path::Path::from(format!("uploads/{id}")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(stored.as_ref(), pdf.as_slice());

    assert_url_scoped_to_size_type_and_signature(url, &pdf).await;

    let complete = |t: String| {
        let request = app
            .client
            .post(app.url(&format!("/v1/documents/{id}/complete")))
            .bearer_auth(t);
        async move { request.send().await.unwrap() }
    };
    let response = complete(token.clone()).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<Value>().await.unwrap()["state"], "uploaded");
    assert_eq!(complete(token.clone()).await.status(), 202, "idempotent");
    let events: Vec<Value> =
        sqlx::query_scalar("select payload from outbox where topic = 'doc.uploaded'")
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    assert_eq!(events, vec![json!({"documentId": id, "loanId": loan})]);
    assert_eq!(
        complete(oidc::access_token("agent-b1").await)
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn declared_size_and_type_are_checked_up_front() {
    let app = spawn_app().await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let response = announce(&app, &token, &loan, json!({
        "filename": "big.pdf", "content_type": "application/pdf", "size_bytes": 60_000_000u64, "doc_type": "other"
    }))
    .await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "file_too_large").await;
    let response = announce(&app, &token, &loan, json!({
        "filename": "run.exe", "content_type": "application/x-msdownload", "size_bytes": 10, "doc_type": "other"
    }))
    .await;
    assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unsupported_file_type",
    )
    .await;
    let response = announce(&app, &token, &loan, json!({
        "filename": "x.pdf", "content_type": "application/pdf", "size_bytes": 10, "doc_type": "selfie"
    }))
    .await;
    assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

/// Upload `bytes` as the agent, declared as `content_type` and `size`, then complete.
pub async fn upload(
    app: &TestApp,
    token: &str,
    loan: &str,
    bytes: &[u8],
    content_type: &str,
    size: usize,
) -> String {
    let upload: Value = announce(app, token, loan, json!({
        "filename": "file.bin", "content_type": content_type, "size_bytes": size, "doc_type": "other"
    }))
    .await
    .json()
    .await
    .unwrap();
    let put = reqwest::Client::new()
        .put(upload["upload"]["url"].as_str().unwrap())
        .header(
            "content-type",
            upload["upload"]["headers"]["Content-Type"]
                .as_str()
                .unwrap(),
        )
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let id = upload["document"]["id"].as_str().unwrap().to_owned();
    let response = app
        .client
        .post(app.url(&format!("/v1/documents/{id}/complete")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    id
}

pub async fn settled(app: &TestApp, token: &str, id: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = app
            .client
            .get(app.url(&format!("/v1/documents/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !matches!(last["state"].as_str(), Some("uploaded") | Some("scanning")) {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("document {id} never settled: {last}");
}

fn eicar() -> Vec<u8> {
    // Assembled at run time so no file in the repository is itself flagged.
    [
        r"X5O!P%@AP[4\PZX54(P^)7CC)7}$",
        "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
    ]
    .concat()
    .into_bytes()
}

/// Only ciphertext in the documents bucket, which decrypts to `pdf`; no quarantine copy left.
async fn assert_encrypted_at_rest(app: &TestApp, id: &str, pdf: &[u8]) {
    let stored = app
        .state
        .storage
        .documents
        .get(&object_store::path::Path::from(format!("documents/{id}")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        pdf.windows(64)
            .step_by(997)
            .all(|w| !stored.windows(64).any(|s| s == w)),
        "plaintext in the documents bucket"
    );
    let lead_id: uuid::Uuid = sqlx::query_scalar("select lead_id from documents where id = $1")
        .bind(uuid::Uuid::parse_str(id).unwrap())
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    let key = app
        .state
        .keys
        .file_key(&app.state.db, lead_id)
        .await
        .unwrap();
    let plain =
        loanfolio::crypto::stream::decrypt_all(&key, uuid::Uuid::parse_str(id).unwrap(), &stored)
            .unwrap();
    assert_eq!(plain, pdf);
    let quarantine = app
        .state
        .storage
        .quarantine
        .head(&object_store::path::Path::from(format!("uploads/{id}")))
        .await;
    assert!(quarantine.is_err(), "the quarantine copy is removed");
}

async fn assert_more_bytes_than_declared_caught(
    app: &TestApp,
    token: &str,
    loan: &str,
    pdf: &[u8],
) {
    // More bytes than declared. The signed URL makes the store refuse that PUT; the
    // pipeline checks again in case a store does not (written here behind its back).
    let announced: Value = announce(app, token, loan, json!({
        "filename": "file.bin", "content_type": "application/pdf", "size_bytes": pdf.len() - 10, "doc_type": "other"
    }))
    .await
    .json()
    .await
    .unwrap();
    let id = announced["document"]["id"].as_str().unwrap().to_owned();
    app.state
        .storage
        .quarantine
        .put(
            &object_store::path::Path::from(format!("uploads/{id}")),
            pdf.to_vec().into(),
        )
        .await
        .unwrap();
    let completed = app
        .client
        .post(app.url(&format!("/v1/documents/{id}/complete")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(completed.status(), 202);
    let doc = settled(app, token, &id).await;
    assert_eq!(doc["reason"], "size_mismatch", "{doc}");
}

/// No encrypted copy of a rejected file; each decision counted once.
async fn assert_rejects_kept_nowhere_and_counted(app: &TestApp) {
    for reason in ["infected", "type_mismatch", "size_mismatch"] {
        let id: uuid::Uuid = sqlx::query_scalar("select id from documents where reason = $1")
            .bind(reason)
            .fetch_one(&app.state.db)
            .await
            .unwrap();
        let encrypted = app
            .state
            .storage
            .documents
            .head(&object_store::path::Path::from(format!("documents/{id}")))
            .await;
        assert!(encrypted.is_err(), "{reason}: no encrypted copy kept");
    }
    // Each decision counted once, by outcome, after its transaction committed.
    crate::helpers::eventually!(
        10,
        || async {
            let text = app.admin_get("/metrics").await.text().await.unwrap();
            [
                "available",
                "rejected_infected",
                "rejected_type_mismatch",
                "rejected_size_mismatch",
            ]
            .iter()
            .all(|outcome| {
                text.lines().any(|l| {
                    l == format!("loanfolio_documents_processed_total{{outcome=\"{outcome}\"}} 1")
                })
            })
        },
        "{}",
        app.admin_get("/metrics").await.text().await.unwrap()
    );
}

#[tokio::test]
async fn the_pipeline_scans_checks_types_and_encrypts() {
    let app = crate::helpers::app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;

    // A clean PDF of several chunks becomes available, encrypted at rest.
    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.extend((0..200_000u32).map(|i| (i % 251) as u8));
    let id = upload(&app, &token, &loan, &pdf, "application/pdf", pdf.len()).await;
    let doc = settled(&app, &token, &id).await;
    assert_eq!(doc["state"], "available", "{doc}");
    assert_eq!(doc["detected_type"], "application/pdf");
    let expected_sha: String = sha2::Sha256::digest(&pdf)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(doc["sha256"], expected_sha);
    assert_encrypted_at_rest(&app, &id, &pdf).await;

    // EICAR, declared as a PDF: infected, never stored.
    let bad = eicar();
    let id = upload(&app, &token, &loan, &bad, "application/pdf", bad.len()).await;
    let doc = settled(&app, &token, &id).await;
    assert_eq!(
        (doc["state"].as_str(), doc["reason"].as_str()),
        (Some("rejected"), Some("infected")),
        "{doc}"
    );

    // An executable renamed and declared as a PDF: type mismatch.
    let exe =
        b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00 not really a program".to_vec();
    let id = upload(&app, &token, &loan, &exe, "application/pdf", exe.len()).await;
    let doc = settled(&app, &token, &id).await;
    assert_eq!(doc["reason"], "type_mismatch", "{doc}");

    assert_more_bytes_than_declared_caught(&app, &token, &loan, &pdf).await;
    assert_rejects_kept_nowhere_and_counted(&app).await;
}

/// The original bytes under a safe disposition; GET and HEAD both audited.
async fn assert_download_and_head_audited(app: &TestApp, token: &str, id: &str, png: &[u8]) {
    let response = app
        .client
        .get(app.url(&format!("/v1/documents/{id}/content")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(
        response.headers()["content-length"],
        png.len().to_string().as_str()
    );
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"scangnp.exe.png\"; filename*=UTF-8''scangnp.exe.png"
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), png);
    let head = app
        .client
        .head(app.url(&format!("/v1/documents/{id}/content")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    let downloads: i64 =
        sqlx::query_scalar("select count(*) from audit_log where action = 'document.downloaded'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(downloads, 2, "GET and HEAD are both audited");
}

async fn assert_a_flipped_byte_aborts_the_download(app: &TestApp, token: &str, id: &str) {
    // A flipped byte in the stored object: the download aborts instead of ending short.
    let path = object_store::path::Path::from(format!("documents/{id}"));
    let mut stored = app
        .state
        .storage
        .documents
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let middle = stored.len() / 2;
    stored[middle] ^= 1;
    app.state
        .storage
        .documents
        .put(&path, stored.into())
        .await
        .unwrap();
    let response = app
        .client
        .get(app.url(&format!("/v1/documents/{id}/content")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(
        response.bytes().await.is_err(),
        "the body must fail, not end quietly"
    );
}

#[tokio::test]
async fn downloads_stream_the_original_bytes_with_a_safe_disposition() {
    let app = crate::helpers::app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    png.extend((0..150_000u32).map(|i| (i % 241) as u8));
    let upload: Announced = announce(
        &app,
        &token,
        &loan,
        json!({
            "filename": "../scan\u{202E}gnp.exe\r\n\u{0}.png", "content_type": "image/png",
            "size_bytes": png.len(), "doc_type": "photo_id"
        }),
    )
    .await
    .json()
    .await
    .unwrap();
    let put = flows::put(&upload.upload, png.clone()).await;
    assert!(put.status().is_success());
    let id = upload.document.id;
    app.client
        .post(app.url(&format!("/v1/documents/{id}/complete")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(settled(&app, &token, &id).await["state"], "available");

    assert_download_and_head_audited(&app, &token, &id, &png).await;

    let get_as = |user: &'static str| {
        let app = &app;
        let id = id.clone();
        async move {
            let token = oidc::access_token(user).await;
            app.client
                .get(app.url(&format!("/v1/documents/{id}/content")))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get_as("agent-b1").await, 404);
    assert_eq!(get_as("admin").await, 403);
    assert_eq!(get_as("compliance").await, 200);

    assert_a_flipped_byte_aborts_the_download(&app, &token, &id).await;
}

/// A borrower's upload of `bytes` as a statement through link `secret`: the refusal's
/// status and body, or 201 and the document once it is put and completed.
async fn borrower_sends(app: &TestApp, secret: &str, bytes: Vec<u8>) -> (u16, Value) {
    let borrower = reqwest::Client::new();
    let response = borrower
        .post(app.url(&format!("/v1/public/upload-links/{secret}/files")))
        .json(&json!({"filename": "statement.pdf", "content_type": "application/pdf", "size_bytes": bytes.len(), "doc_type": "bank_statement"}))
        .send()
        .await
        .unwrap();
    if response.status() != 201 {
        return (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        );
    }
    let upload: Value = response.json().await.unwrap();
    let announced: Announced = serde_json::from_value(upload.clone()).unwrap();
    assert!(
        flows::put(&announced.upload, bytes)
            .await
            .status()
            .is_success()
    );
    let id = announced.document.id;
    let done = borrower
        .post(app.url(&format!(
            "/v1/public/upload-links/{secret}/files/{id}/complete"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 202);
    (201, upload["document"].clone())
}

#[tokio::test]
async fn borrowers_upload_through_their_link_only() {
    let app = crate::helpers::app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan_a = agent_a1_loan(&app, &token).await;
    let loan_b = agent_a1_loan(&app, &token).await;
    let link: Value = app
        .client
        .post(app.url(&format!("/v1/loans/{loan_a}/upload-links")))
        .bearer_auth(&token)
        .header("Idempotency-Key", "link-1")
        .json(&json!({"max_files": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = link["token"].as_str().unwrap().to_owned();
    let borrower = reqwest::Client::new();
    let send = |bytes: Vec<u8>| borrower_sends(&app, &secret, bytes);

    // A rejected file does not use up the link's one file…
    let (status, doc) = send(eicar()).await;
    assert_eq!(status, 201);
    let id = doc["id"].as_str().unwrap().to_owned();
    let settled_doc = settled(&app, &token, &id).await;
    assert_eq!(settled_doc["reason"], "infected");
    assert_eq!(settled_doc["uploaded_by"], "borrower");
    // …so the replacement is accepted, and then the link is full.
    let pdf = b"%PDF-1.4\n% a statement\n".to_vec();
    let (status, doc) = send(pdf.clone()).await;
    assert_eq!(status, 201);
    assert_eq!(
        settled(&app, &token, doc["id"].as_str().unwrap()).await["state"],
        "available"
    );
    let (status, body) = send(pdf.clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (410, Some("link_exhausted"))
    );

    // The link can never reach another loan's documents.
    let other: Value = announce(&app, &token, &loan_b, json!({
        "filename": "x.pdf", "content_type": "application/pdf", "size_bytes": 10, "doc_type": "other"
    }))
    .await
    .json()
    .await
    .unwrap();
    let other_id = other["document"]["id"].as_str().unwrap();
    let response = borrower
        .post(app.url(&format!(
            "/v1/public/upload-links/{secret}/files/{other_id}/complete"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(!app.logs.text().contains(&secret), "token in the logs");
}

/// Only the owner may delete; a deleted document is no longer served, its object kept.
async fn assert_soft_delete(app: &TestApp, token: &str, id: &str) {
    let compliance = oidc::access_token("compliance").await;
    let delete = |t: &str| {
        app.client
            .delete(app.url(&format!("/v1/documents/{id}")))
            .bearer_auth(t.to_owned())
            .send()
    };
    assert_eq!(delete(&compliance).await.unwrap().status(), 403);
    assert_eq!(delete(token).await.unwrap().status(), 204);
    let doc: Value = app
        .client
        .get(app.url(&format!("/v1/documents/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["state"], "deleted");
    let content = app
        .client
        .get(app.url(&format!("/v1/documents/{id}/content")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(content.status(), 404, "no longer served");
    // The encrypted object stays for retention to purge.
    let kept = app
        .state
        .storage
        .documents
        .head(&object_store::path::Path::from(format!("documents/{id}")))
        .await;
    assert!(kept.is_ok());
}

#[tokio::test]
async fn the_shortcut_and_soft_delete() {
    let app = crate::helpers::app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let response = app
        .client
        .get(app.url(&format!("/v1/loans/{loan}/docs/upload-url?filename=pay.pdf&content_type=application/pdf&size_bytes=24&doc_type=pay_stub")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let upload: Value = response.json().await.unwrap();
    assert_eq!(upload["document"]["doc_type"], "pay_stub");
    assert_eq!(upload["document"]["state"], "awaiting_upload");
    let response = app
        .client
        .get(app.url(&format!(
            "/v1/loans/{loan}/docs/upload-url?filename=pay.pdf"
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let pdf = b"%PDF-1.4\n% pay stub 123\n".to_vec();
    assert!(
        reqwest::Client::new()
            .put(upload["upload"]["url"].as_str().unwrap())
            .header(
                "content-type",
                upload["upload"]["headers"]["Content-Type"]
                    .as_str()
                    .unwrap()
            )
            .body(pdf)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let id = upload["document"]["id"].as_str().unwrap().to_owned();
    app.client
        .post(app.url(&format!("/v1/documents/{id}/complete")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(settled(&app, &token, &id).await["state"], "available");

    assert_soft_delete(&app, &token, &id).await;
}

#[tokio::test]
async fn the_reconciler_completes_abandoned_uploads_and_expires_empty_ones() {
    let app = crate::helpers::app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let pdf = b"%PDF-1.4\n% the browser died\n".to_vec();
    let announce_pdf = |size: usize| {
        announce(
            &app,
            &token,
            &loan,
            json!({
                "filename": "late.pdf", "content_type": "application/pdf", "size_bytes": size, "doc_type": "other"
            }),
        )
    };
    let put_but_never_completed: Value = announce_pdf(pdf.len()).await.json().await.unwrap();
    assert!(
        reqwest::Client::new()
            .put(put_but_never_completed["upload"]["url"].as_str().unwrap())
            .header(
                "content-type",
                put_but_never_completed["upload"]["headers"]["Content-Type"]
                    .as_str()
                    .unwrap()
            )
            .body(pdf.clone())
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let never_uploaded: Value = announce_pdf(10).await.json().await.unwrap();
    sqlx::query("update documents set upload_expires_at = now() - interval '1 second'")
        .execute(&app.state.db)
        .await
        .unwrap();

    let swept = loanfolio::documents::reconciler::sweep(&app.state)
        .await
        .unwrap();
    assert_eq!((swept.completed, swept.expired), (1, 1));
    let completed = put_but_never_completed["document"]["id"].as_str().unwrap();
    assert_eq!(
        settled(&app, &token, completed).await["state"],
        "available",
        "completed, never deleted"
    );
    let expired = never_uploaded["document"]["id"].as_str().unwrap();
    assert_eq!(settled(&app, &token, expired).await["state"], "expired");
    assert_eq!(
        loanfolio::documents::reconciler::sweep(&app.state)
            .await
            .unwrap()
            .completed,
        0,
        "idempotent"
    );
}

#[tokio::test]
async fn with_clamd_down_documents_wait_and_are_never_available_unscanned() {
    let mut clamd = crate::helpers::clamd::PrivateClamd::start().await;
    let address = clamd.address();
    let app = crate::helpers::app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .settings(move |s| s.clamd.address = address)
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    clamd.stop().await;
    let pdf = b"%PDF-1.4\n% waiting for the scanner\n".to_vec();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(upload(&app, &token, &loan, &pdf, "application/pdf", pdf.len()).await);
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for id in &ids {
        let doc: Value = app
            .client
            .get(app.url(&format!("/v1/documents/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            doc["state"], "uploaded",
            "nothing becomes available unscanned: {doc}"
        );
    }
    clamd.restart().await;
    for id in &ids {
        let doc = settled_within(&app, &token, id, 60).await;
        assert_eq!(doc["state"], "available", "{doc}");
    }
}

pub async fn settled_within(app: &TestApp, token: &str, id: &str, seconds: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let doc: Value = app
            .client
            .get(app.url(&format!("/v1/documents/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if doc["state"] != "uploaded" || std::time::Instant::now() > deadline {
            return doc;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `len` bytes of `magic` followed by non-repeating noise, so every 64-byte window is distinct.
pub fn sample(magic: &[u8], seed: u64, len: usize) -> Vec<u8> {
    let mut out = magic.to_vec();
    let mut x = seed | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::test]
async fn pdf_jpeg_and_png_round_trip_and_no_plaintext_run_is_stored() {
    let app = crate::helpers::app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    round_trip_stores_no_plaintext(app).await;
}

#[tokio::test]
async fn pdf_jpeg_and_png_round_trip_on_garage() {
    let app = crate::helpers::app()
        .settings(crate::helpers::garage::use_garage)
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    round_trip_stores_no_plaintext(app).await;
}

async fn round_trip_stores_no_plaintext(app: TestApp) {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let originals = [
        ("application/pdf", sample(b"%PDF-1.7\n%", 11, 150_000)),
        ("image/jpeg", sample(&[0xFF, 0xD8, 0xFF, 0xE0], 22, 140_001)),
        (
            "image/png",
            sample(
                &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A],
                33,
                65_536 * 2,
            ),
        ),
    ];
    for (content_type, bytes) in &originals {
        // Uploaded by pre-signed PUT from outside the service.
        let id = upload(&app, &token, &loan, bytes, content_type, bytes.len()).await;
        let doc = settled(&app, &token, &id).await;
        assert_eq!(doc["state"], "available", "{content_type}: {doc}");
        assert_eq!(doc["detected_type"], *content_type);
        let content = app
            .client
            .get(app.url(&format!("/v1/documents/{id}/content")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(content.status(), 200);
        assert_eq!(content.headers()["content-type"], *content_type);
        assert_eq!(
            content.bytes().await.unwrap().as_ref(),
            bytes.as_slice(),
            "{content_type}: the downloaded bytes are the original"
        );
    }
    // Every 64-byte window of every original, against everything in the documents bucket.
    let documents = app.state.storage.documents.clone();
    let keys: Vec<_> = documents
        .list(None)
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(keys.len(), originals.len());
    let mut stored = std::collections::HashSet::new();
    for key in keys {
        let object = documents.get(&key).await.unwrap().bytes().await.unwrap();
        for window in object.windows(64) {
            stored.insert(window.to_vec());
        }
    }
    for (content_type, bytes) in &originals {
        let leaked = bytes.windows(64).filter(|w| stored.contains(*w)).count();
        assert_eq!(
            leaked, 0,
            "{content_type}: plaintext runs in the documents bucket"
        );
    }
}
