//! Loans: creation for a visible lead, the dashboard's snapshot counts, and the status
//! machine with the role matrix, If-Match and concurrency.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::flows::{Client, agent_a1_loan, full_lead, new_loan};
use crate::helpers::{TestApp, assert_problem, oidc, spawn_app};

async fn post(
    app: &TestApp,
    token: &str,
    path: &str,
    body: Value,
    if_match: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&body);
    if let Some(etag) = if_match {
        request = request.header("If-Match", etag);
    }
    request.send().await.unwrap()
}

async fn loan_for(app: &TestApp, user: &str) -> (String, String) {
    let token = oidc::access_token(user).await;
    let agent = Client::new(app, user).await;
    let lead: Value = agent.create(full_lead()).await.json().await.unwrap();
    let response = post(
        app,
        &token,
        "/v1/loans",
        new_loan(lead["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(response.status(), 201);
    let loan: Value = response.json().await.unwrap();
    (loan["id"].as_str().unwrap().to_owned(), token)
}

pub(crate) async fn move_to(
    app: &TestApp,
    token: &str,
    loan: &str,
    status: &str,
) -> reqwest::Response {
    let current = app
        .client
        .get(app.url(&format!("/v1/loans/{loan}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let etag = current
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    post(
        app,
        token,
        &format!("/v1/loans/{loan}/status"),
        json!({"status": status, "reason": "test"}),
        etag.as_deref(),
    )
    .await
}

#[tokio::test]
async fn create_read_and_dashboard() {
    let app = spawn_app().await;
    let (loan, token) = loan_for(&app, "agent-a1").await;
    let response = app
        .client
        .get(app.url(&format!("/v1/loans/{loan}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["etag"], "\"1\"");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "draft");
    assert_eq!(body["amount"], "425000.10");
    assert_eq!(body["property"]["city"], "Springfield");

    // Another team's agent cannot attach a loan to this lead, nor see the loan.
    let b1 = oidc::access_token("agent-b1").await;
    let lead_id = body["lead_id"].as_str().unwrap();
    let response = post(&app, &b1, "/v1/loans", new_loan(lead_id), None).await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        app.client
            .get(app.url(&format!("/v1/loans/{loan}")))
            .bearer_auth(&b1)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let mut bad = new_loan(lead_id);
    bad["amount"] = json!("-3");
    assert_eq!(
        post(&app, &token, "/v1/loans", bad, None).await.status(),
        422
    );

    assert_eq!(
        move_to(&app, &token, &loan, "submitted").await.status(),
        200
    );
    let (_second, _) = loan_for(&app, "agent-a1").await;
    let dashboard: Value = app
        .client
        .get(app.url("/v1/loans"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dashboard["items"].as_array().unwrap().len(), 2);
    assert_eq!(dashboard["status_counts"]["draft"], 1);
    assert_eq!(dashboard["status_counts"]["submitted"], 1);
    assert_eq!(dashboard["status_counts"]["closed"], 0);
    let other: Value = app
        .client
        .get(app.url("/v1/loans"))
        .bearer_auth(&b1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(other["items"].as_array().unwrap().len(), 0);
    assert_eq!(other["status_counts"]["draft"], 0);
}

/// The loan's history: one page, each move with its actor.
async fn assert_withdrawn_history(app: &TestApp, owner: &str, loan: &str) {
    let history: Value = app
        .client
        .get(app.url(&format!("/v1/loans/{loan}/history")))
        .bearer_auth(owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(history["next_cursor"].is_null(), "one page: {history}");
    let moves: Vec<(String, String, String)> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["from"].as_str().unwrap().into(),
                h["to"].as_str().unwrap().into(),
                h["actor"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        vec![
            ("draft".into(), "submitted".into(), "agent-a1".into()),
            (
                "submitted".into(),
                "underwriting".into(),
                "manager-a".into()
            ),
            ("underwriting".into(), "withdrawn".into(), "agent-a1".into()),
        ]
    );
    assert_eq!(history["items"][0]["reason"], "test");
}

#[tokio::test]
async fn the_status_machine_and_the_role_matrix() {
    let app = spawn_app().await;
    let manager = oidc::access_token("manager-a").await;
    let compliance = oidc::access_token("compliance").await;
    let a2 = oidc::access_token("agent-a2").await;

    // draft → submitted: the owner may; a teammate (not the owner) may not see it.
    let (loan, owner) = loan_for(&app, "agent-a1").await;
    assert_eq!(move_to(&app, &a2, &loan, "submitted").await.status(), 404);
    assert_eq!(
        move_to(&app, &compliance, &loan, "submitted")
            .await
            .status(),
        403
    );
    // Never-allowed moves are 409 before any role check.
    let response = move_to(&app, &owner, &loan, "closed").await;
    assert_problem(response, StatusCode::CONFLICT, "invalid_transition").await;
    assert_eq!(
        move_to(&app, &owner, &loan, "submitted").await.status(),
        200
    );
    // submitted → underwriting: not the agent, the manager (manual override).
    assert_eq!(
        move_to(&app, &owner, &loan, "underwriting").await.status(),
        403
    );
    assert_eq!(
        move_to(&app, &manager, &loan, "underwriting")
            .await
            .status(),
        200
    );
    assert_eq!(move_to(&app, &owner, &loan, "denied").await.status(), 403);
    assert_eq!(move_to(&app, &manager, &loan, "closed").await.status(), 200);
    // Terminal.
    assert_eq!(
        move_to(&app, &manager, &loan, "withdrawn").await.status(),
        409
    );

    // Withdrawal from submitted or underwriting by the owner.
    let (loan, owner) = loan_for(&app, "agent-a1").await;
    assert_eq!(
        move_to(&app, &owner, &loan, "submitted").await.status(),
        200
    );
    assert_eq!(
        move_to(&app, &manager, &loan, "underwriting")
            .await
            .status(),
        200
    );
    assert_eq!(
        move_to(&app, &owner, &loan, "withdrawn").await.status(),
        200
    );

    assert_withdrawn_history(&app, &owner, &loan).await;
}

#[tokio::test]
async fn if_match_is_required_and_checked() {
    let app = spawn_app().await;
    let (loan, owner) = loan_for(&app, "agent-a1").await;
    let path = format!("/v1/loans/{loan}/status");
    let response = post(&app, &owner, &path, json!({"status": "submitted"}), None).await;
    assert_eq!(response.status(), 428);
    let response = post(
        &app,
        &owner,
        &path,
        json!({"status": "submitted"}),
        Some("\"9\""),
    )
    .await;
    assert_eq!(response.status(), 412);
    let response = post(
        &app,
        &owner,
        &path,
        json!({"status": "submitted"}),
        Some("\"1\""),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
}

#[tokio::test]
async fn twenty_concurrent_transitions_one_winner_with_one_history_audit_and_event() {
    let app = spawn_app().await;
    let (loan, owner) = loan_for(&app, "agent-a1").await;
    let path = format!("/v1/loans/{loan}/status");
    let attempts = (0..20).map(|i| {
        let status = if i % 2 == 0 { "submitted" } else { "withdrawn" };
        post(
            &app,
            &owner,
            &path,
            json!({"status": status}),
            Some("\"1\""),
        )
    });
    let statuses: Vec<u16> = join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 409, 412].contains(s)),
        "{statuses:?}"
    );

    let id = uuid::Uuid::parse_str(&loan).unwrap();
    let db = &app.state.db;
    let history: i64 =
        sqlx::query_scalar("select count(*) from loan_status_history where loan_id = $1")
            .bind(id)
            .fetch_one(db)
            .await
            .unwrap();
    let audits: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where entity_id = $1 and action = 'loan.status_changed'",
    )
    .bind(id)
    .fetch_one(db)
    .await
    .unwrap();
    let events: Vec<Value> =
        sqlx::query_scalar("select payload from outbox where topic = 'loan.status.changed'")
            .fetch_all(db)
            .await
            .unwrap();
    assert_eq!((history, audits, events.len()), (1, 1, 1));
    assert_eq!(events[0]["loanId"], loan.as_str());
    assert_eq!(events[0]["oldStatus"], "draft");
}

/// Every list route takes `limit` and `cursor` and answers `{items, next_cursor}`.
/// Every item of `path`, read one page at a time.
async fn read_one_at_a_time(app: &TestApp, token: &str, path: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit=1&cursor={c}"),
            None => format!("{path}?limit=1"),
        };
        let page: Value = app
            .client
            .get(app.url(&url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = page["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: {page}"));
        assert!(items.len() <= 1, "{path}");
        seen.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    seen
}

/// Three of everything a loan lists: links, documents, requests and credit pulls.
async fn three_of_each(app: &TestApp, token: &str, loan: &str, lead: &str) {
    for _ in 0..3 {
        let made = [
            app.create(token, &format!("/v1/loans/{loan}/upload-links"), &json!({})).await,
            app.create(token, &format!("/v1/loans/{loan}/documents"),
                &json!({"filename": "a.pdf", "content_type": "application/pdf", "size_bytes": 10, "doc_type": "w2"})).await,
            app.create(token, &format!("/v1/loans/{loan}/document-requests"), &json!({"doc_type": "w2"})).await,
            app.create(token, &format!("/v1/leads/{lead}/credit-reports"),
                &json!({"pull_type": "soft", "consent": {"obtained_at": "2026-11-01T10:00:00Z", "method": "written", "text_version": "v"}})).await,
        ];
        assert!(made.iter().all(|r| r.status().is_success()));
    }
}

#[tokio::test]
async fn every_list_route_pages_with_limit_and_cursor() {
    let app = crate::helpers::spawn_app().await;
    let token = crate::helpers::oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let lead = {
        let body: Value = app
            .client
            .get(app.url(&format!("/v1/loans/{loan}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["lead_id"].as_str().unwrap().to_owned()
    };
    three_of_each(&app, &token, &loan, &lead).await;
    for to in ["submitted", "withdrawn"] {
        let version: Value = app
            .client
            .get(app.url(&format!("/v1/loans/{loan}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            move_to_version(
                &app,
                &token,
                &loan,
                to,
                version["version"].as_i64().unwrap()
            )
            .await,
            200
        );
    }
    for (path, total) in [
        (format!("/v1/loans/{loan}/upload-links"), 3),
        (format!("/v1/loans/{loan}/documents"), 3),
        (format!("/v1/loans/{loan}/document-requests"), 3),
        (format!("/v1/leads/{lead}/credit-reports"), 3),
        (format!("/v1/loans/{loan}/history"), 2),
    ] {
        let seen = read_one_at_a_time(&app, &token, &path).await;
        assert_eq!(seen.len(), total, "{path}: {seen:?}");
        for bad in ["limit=0", "limit=201", "cursor=not-a-cursor"] {
            let response = app
                .client
                .get(app.url(&format!("{path}?{bad}")))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{path}?{bad}");
        }
    }
    let notifications: Value = app
        .client
        .get(app.url(&format!("/v1/loans/{loan}/notifications?limit=5")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(notifications["items"].is_array() && notifications.get("next_cursor").is_some());
}

async fn move_to_version(
    app: &TestApp,
    token: &str,
    loan: &str,
    status: &str,
    version: i64,
) -> u16 {
    app.client
        .post(app.url(&format!("/v1/loans/{loan}/status")))
        .bearer_auth(token)
        .header("If-Match", format!("\"{version}\""))
        .json(&json!({"status": status}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
