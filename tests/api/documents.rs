//! Documents, first part: an agent's upload goes straight to the quarantine bucket by a
//! pre-signed PUT from outside the service; `complete` moves it to `uploaded` with its event.

use object_store::ObjectStoreExt;
use serde_json::{Value, json};

use crate::helpers::{TestApp, oidc, spawn_app};
use crate::leads::{Client, full_lead};

async fn loan(app: &TestApp, token: &str) -> String {
    let agent = Client::new(app, "agent-a1").await;
    let lead: Value = agent.create(full_lead()).await.json().await.unwrap();
    let loan: Value = app
        .client
        .post(app.url("/v1/loans"))
        .bearer_auth(token)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"lead_id": lead["id"], "loan_type": "usda", "amount": "150000",
                      "property": {"line1": "5 Pine Ct", "city": "Akron", "state": "OH", "postal_code": "44308"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    loan["id"].as_str().unwrap().to_owned()
}

async fn announce(app: &TestApp, token: &str, loan: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/loans/{loan}/documents")))
        .bearer_auth(token)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_presigned_put_then_complete() {
    let app = spawn_app().await;
    let token = oidc::access_token("agent-a1").await;
    let loan = loan(&app, &token).await;
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

    // A tampered signature is refused by the storage server itself.
    let tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    let put = reqwest::Client::new()
        .put(&tampered)
        .body(pdf.clone())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_client_error(), "{}", put.status());

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
    let loan = loan(&app, &token).await;
    let response = announce(&app, &token, &loan, json!({
        "filename": "big.pdf", "content_type": "application/pdf", "size_bytes": 60_000_000u64, "doc_type": "other"
    }))
    .await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "file_too_large"
    );
    let response = announce(&app, &token, &loan, json!({
        "filename": "run.exe", "content_type": "application/x-msdownload", "size_bytes": 10, "doc_type": "other"
    }))
    .await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "unsupported_file_type"
    );
    let response = announce(&app, &token, &loan, json!({
        "filename": "x.pdf", "content_type": "application/pdf", "size_bytes": 10, "doc_type": "selfie"
    }))
    .await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "validation_failed"
    );
}
