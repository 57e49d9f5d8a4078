//! The needs list: agents request document types, borrowers answer through their link
//! (a file, or "not applicable"), agents accept or reject what arrived; each request keeps a
//! timeline, and a rejected file frees its place on the link for a replacement.

use serde_json::{Value, json};

use crate::helpers::flows::agent_a1_loan;
use crate::helpers::flows::{self, borrower_upload};
use crate::helpers::{TestApp, oidc};

async fn post_json(app: &TestApp, token: &str, path: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn request(app: &TestApp, token: &str, loan: &str, body: Value) -> Value {
    let response = app
        .create(token, &format!("/v1/loans/{loan}/document-requests"), &body)
        .await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn link_state(app: &TestApp, secret: &str) -> Value {
    let response = app.get(&format!("/v1/public/upload-links/{secret}")).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn available(app: &TestApp, token: &str, id: &str) -> Value {
    for _ in 0..150 {
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
        if !matches!(doc["state"].as_str(), Some("uploaded" | "scanning")) {
            return doc;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("document {id} never settled");
}

async fn needs_list(app: &TestApp, token: &str, loan: &str) -> Vec<Value> {
    let response = app
        .client
        .get(app.url(&format!("/v1/loans/{loan}/document-requests")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

fn by_id<'a>(items: &'a [Value], id: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {items:?}"))
}

const PDF: &[u8] = b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<< /Root 1 0 R >>\n%%EOF\n";

async fn assert_bad_requests_write_nothing(app: &TestApp, token: &str, loan: &str) {
    // Bad input is refused and writes nothing.
    let past = app
        .create(
            token,
            &format!("/v1/loans/{loan}/document-requests"),
            &json!({"doc_type": "w2", "due_date": "2020-01-01"}),
        )
        .await;
    assert_eq!(past.status(), 422);
    let unknown_type = app
        .create(
            token,
            &format!("/v1/loans/{loan}/document-requests"),
            &json!({"doc_type": "selfie"}),
        )
        .await;
    assert_eq!(unknown_type.status(), 422);
    assert!(needs_list(app, token, loan).await.is_empty());
}

/// The borrower sees the needs list on the link, with the agent's note.
async fn assert_link_shows_the_needs_list(app: &TestApp, secret: &str, statements_id: &str) {
    let state = link_state(app, secret).await;
    let requests = state["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        by_id(requests, statements_id)["note"],
        "Last two months, all pages"
    );
    assert_eq!(by_id(requests, statements_id)["state"], "outstanding");
    assert!(state["max_file_bytes"].as_u64().unwrap() > 0);
}

async fn assert_rejection_seen_by_the_borrower(
    app: &TestApp,
    token: &str,
    secret: &str,
    statements_id: &str,
    first: &str,
) {
    // A rejection needs a reason; with one, the request is `rejected` and the borrower sees it.
    let no_reason = post_json(
        app,
        token,
        &format!("/v1/documents/{first}/review"),
        json!({"decision": "reject"}),
    )
    .await;
    assert_eq!(no_reason.status(), 422);
    let reviewed = post_json(
        app,
        token,
        &format!("/v1/documents/{first}/review"),
        json!({"decision": "reject", "reason": "Page 2 is missing"}),
    )
    .await;
    assert_eq!(reviewed.status(), 200);
    let reviewed: Value = reviewed.json().await.unwrap();
    assert_eq!(reviewed["review"]["decision"], "reject");
    assert_eq!(reviewed["review"]["reason"], "Page 2 is missing");
    let state = link_state(app, secret).await;
    let seen = by_id(state["requests"].as_array().unwrap(), statements_id);
    assert_eq!(seen["state"], "rejected");
    assert_eq!(seen["reason"], "Page 2 is missing");
    let file = by_id(state["files"].as_array().unwrap(), first);
    assert_eq!(file["state"], "rejected");
    assert_eq!(file["reason"], "rejected_by_agent");
    assert_eq!(file["review_reason"], "Page 2 is missing");
    assert_eq!(file["filename"], "march.pdf");
    // …and the rejected file no longer uses up the link's one place.
    assert_eq!(state["files_accepted"], 0);
}

async fn assert_timeline(app: &TestApp, token: &str, loan: &str, statements_id: &str, first: &str) {
    let items = needs_list(app, token, loan).await;
    let statements = by_id(&items, statements_id);
    assert_eq!(statements["state"], "accepted");
    let events: Vec<&str> = statements["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["requested", "received", "rejected", "received", "accepted"]
    );
    let rejection = &statements["timeline"][2];
    assert_eq!(rejection["reason"], "Page 2 is missing");
    assert_eq!(rejection["document_id"], first);
}

async fn assert_not_applicable(app: &TestApp, secret: &str, w2_id: &str, statements_id: &str) {
    // Not applicable: a comment is required; it applies once; an accepted request refuses it.
    let na = |id: String, comment: &'static str| {
        let (app, secret) = (app, secret.to_owned());
        async move {
            reqwest::Client::new()
                .post(app.url(&format!(
                    "/v1/public/upload-links/{secret}/requests/{id}/not-applicable"
                )))
                .json(&json!({ "comment": comment }))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(na(w2_id.to_owned(), "  ").await.status(), 422);
    let marked = na(w2_id.to_owned(), "I am self-employed").await;
    assert_eq!(marked.status(), 200);
    let marked: Value = marked.json().await.unwrap();
    assert_eq!(marked["state"], "not_applicable");
    assert_eq!(marked["reason"], "I am self-employed");
    assert_eq!(na(w2_id.to_owned(), "again").await.status(), 200);
    let refused = na(statements_id.to_owned(), "never mind").await;
    let (status, body) = (refused.status(), refused.json::<Value>().await.unwrap());
    assert_eq!(
        (status.as_u16(), &body["code"]),
        (409, &json!("invalid_state")),
        "{body}"
    );
}

/// The borrower replaces the rejected file and the agent accepts the replacement.
async fn accept_a_replacement(
    app: &TestApp,
    token: &str,
    secret: &str,
    statements_id: &str,
    first: &str,
) {
    let replacement = borrower_upload(
        app,
        secret,
        &json!({"filename": "march-full.pdf", "content_type": "application/pdf", "size_bytes": PDF.len(), "document_request_id": statements_id}),
        PDF,
    )
    .await;
    let doc = available(app, token, &replacement).await;
    assert_eq!(doc["state"], "available");
    assert_eq!(
        doc["duplicate_of"], first,
        "the same bytes are flagged as a duplicate of the earlier file"
    );
    let accepted = post_json(
        app,
        token,
        &format!("/v1/documents/{replacement}/review"),
        json!({"decision": "accept"}),
    )
    .await;
    assert_eq!(accepted.status(), 200);
}

/// The agent's actions are in the audit log without the free text.
async fn assert_audit_without_free_text(app: &TestApp, first: &str) {
    let audit: Value = app
        .client
        .get(app.url(&format!("/v1/audit?entity_type=document&entity_id={first}")))
        .bearer_auth(oidc::access_token("compliance").await)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = audit.to_string();
    assert!(text.contains("document.reviewed"), "{text}");
    assert!(!text.contains("Page 2 is missing"), "{text}");
}

#[tokio::test]
async fn requests_reviews_replacements_and_not_applicable() {
    let app = crate::helpers::app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let due = (time::OffsetDateTime::now_utc().date() + time::Duration::days(7)).to_string();

    assert_bad_requests_write_nothing(&app, &token, &loan).await;

    let statements = request(
        &app,
        &token,
        &loan,
        json!({"doc_type": "bank_statement", "note": "Last two months, all pages", "due_date": due}),
    )
    .await;
    assert_eq!(statements["state"], "outstanding");
    assert_eq!(statements["due_date"], due.as_str());
    let w2 = request(&app, &token, &loan, json!({"doc_type": "w2"})).await;
    let (statements_id, w2_id) = (
        statements["id"].as_str().unwrap().to_owned(),
        w2["id"].as_str().unwrap().to_owned(),
    );

    // The borrower sees the needs list on the link, with the agent's note.
    let secret = flows::link(&app, &token, &loan, &json!({"max_files": 1}))
        .await
        .token;
    assert_link_shows_the_needs_list(&app, &secret, &statements_id).await;

    // A file for the request takes the request's type and makes it `received`.
    let first = borrower_upload(
        &app,
        &secret,
        &json!({"filename": "march.pdf", "content_type": "application/pdf", "size_bytes": PDF.len(), "document_request_id": statements_id}),
        PDF,
    )
    .await;
    let doc = available(&app, &token, &first).await;
    assert_eq!(doc["state"], "available");
    assert_eq!(doc["doc_type"], "bank_statement");
    let items = needs_list(&app, &token, &loan).await;
    assert_eq!(by_id(&items, &statements_id)["state"], "received");

    // The link is full (max_files 1)…
    let full = reqwest::Client::new()
        .post(app.url(&format!("/v1/public/upload-links/{secret}/files")))
        .json(&json!({"filename": "x.pdf", "content_type": "application/pdf", "size_bytes": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), 410);

    assert_rejection_seen_by_the_borrower(&app, &token, &secret, &statements_id, &first).await;

    accept_a_replacement(&app, &token, &secret, &statements_id, &first).await;

    assert_timeline(&app, &token, &loan, &statements_id, &first).await;

    assert_not_applicable(&app, &secret, &w2_id, &statements_id).await;

    assert_audit_without_free_text(&app, &first).await;
    assert!(!app.logs.text().contains(&secret), "token in the logs");
}

#[tokio::test]
async fn a_link_and_an_agent_reach_only_their_own_loans_requests() {
    let app = crate::helpers::app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan_a = agent_a1_loan(&app, &token).await;
    let loan_b = agent_a1_loan(&app, &token).await;
    let request_b = request(&app, &token, &loan_b, json!({"doc_type": "photo_id"})).await;
    let request_b = request_b["id"].as_str().unwrap();
    let secret_a = flows::link(&app, &token, &loan_a, &json!({"max_files": 5}))
        .await
        .token;

    // Loan A's link can neither see, answer nor upload against loan B's request.
    let state = link_state(&app, &secret_a).await;
    assert!(state["requests"].as_array().unwrap().is_empty());
    let na = reqwest::Client::new()
        .post(app.url(&format!(
            "/v1/public/upload-links/{secret_a}/requests/{request_b}/not-applicable"
        )))
        .json(&json!({"comment": "n/a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(na.status(), 404);
    let upload = reqwest::Client::new()
        .post(app.url(&format!("/v1/public/upload-links/{secret_a}/files")))
        .json(&json!({"filename": "id.png", "content_type": "image/png", "size_bytes": 10, "document_request_id": request_b}))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 422);

    // Another team's agent does not see the list; a review of a document not yet
    // available is refused.
    let outsider = oidc::access_token("agent-b1").await;
    let hidden = app
        .client
        .get(app.url(&format!("/v1/loans/{loan_b}/document-requests")))
        .bearer_auth(&outsider)
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 404);
    let pending: Value = app
        .create(
            &token,
            &format!("/v1/loans/{loan_a}/documents"),
            &json!({"filename": "a.pdf", "content_type": "application/pdf", "size_bytes": 10, "doc_type": "other"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let pending = pending["document"]["id"].as_str().unwrap();
    let early = post_json(
        &app,
        &token,
        &format!("/v1/documents/{pending}/review"),
        json!({"decision": "accept"}),
    )
    .await;
    assert_eq!(early.status(), 409);
    let foreign = post_json(
        &app,
        &outsider,
        &format!("/v1/documents/{pending}/review"),
        json!({"decision": "accept"}),
    )
    .await;
    assert_eq!(foreign.status(), 404);
}

#[tokio::test]
async fn a_password_protected_pdf_is_rejected() {
    let app = crate::helpers::app()
        .workers_only(&[loanfolio::events::DOCUMENT_PIPELINE])
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let secret = flows::link(&app, &token, &loan, &json!({"max_files": 5}))
        .await
        .token;
    let protected: &[u8] = b"%PDF-1.6\n1 0 obj<<>>endobj\ntrailer\n<< /Root 1 0 R /Encrypt 2 0 R /ID [<01><02>] >>\n%%EOF\n";
    let id = borrower_upload(
        &app,
        &secret,
        &json!({"filename": "locked.pdf", "content_type": "application/pdf", "size_bytes": protected.len()}),
        protected,
    )
    .await;
    let doc = available(&app, &token, &id).await;
    assert_eq!(doc["state"], "rejected");
    assert_eq!(doc["reason"], "encrypted_pdf");
    // The borrower is told why, and the file does not count against the link.
    let state = link_state(&app, &secret).await;
    assert_eq!(state["files"][0]["reason"], "encrypted_pdf");
    assert_eq!(state["files_accepted"], 0);
}
