//! Credit pulls against the bureau simulator: consent and subject rules, the asynchronous
//! pull to `completed`, the audited full report, reissue and upgrade, permanent failures
//! marking loans `needs_attention`, and the circuit breaker with a bureau that is down.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::bureau::PrivateBureau;
use crate::helpers::flows::{Client, full_lead};
use crate::helpers::{TestApp, assert_problem, eventually, oidc};

fn consent() -> Value {
    json!({"obtained_at": "2026-11-01T10:00:00Z", "method": "electronic", "text_version": "fcra-2026-01", "ip": "203.0.113.9"})
}

async fn lead(app: &TestApp, overrides: Value) -> String {
    let agent = Client::new(app, "agent-a1").await;
    let mut body = full_lead();
    for (k, v) in overrides.as_object().unwrap() {
        body[k] = v.clone();
    }
    let response = agent.create(body).await;
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn pull(app: &TestApp, token: &str, lead: &str, body: Value) -> reqwest::Response {
    app.create(token, &format!("/v1/leads/{lead}/credit-reports"), &body)
        .await
}

/// Request a soft pull with a valid consent; the pull's id.
async fn soft_pull(app: &TestApp, token: &str, lead: &str) -> String {
    let response = pull(
        app,
        token,
        lead,
        json!({"pull_type": "soft", "consent": consent()}),
    )
    .await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn settled(app: &TestApp, token: &str, id: &str, seconds: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..seconds * 10 {
        last = app
            .client
            .get(app.url(&format!("/v1/credit-reports/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if matches!(last["status"].as_str(), Some("completed" | "failed")) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pull {id} never finished: {last}");
}

async fn assert_consent_and_subject_rules(app: &TestApp, token: &str, id: &str) {
    let none = pull(app, token, id, json!({"pull_type": "soft"})).await;
    assert_problem(none, StatusCode::UNPROCESSABLE_ENTITY, "consent_required").await;
    let no_ip = pull(app, token, id, json!({"pull_type": "soft", "consent": {"obtained_at": "2026-11-01T10:00:00Z", "method": "electronic", "text_version": "v1"}})).await;
    assert_eq!(no_ip.status(), 422);
    assert_eq!(
        no_ip.json::<Value>().await.unwrap()["errors"][0]["field"],
        "consent.ip"
    );
    let thin = lead(app, json!({"ssn": null})).await;
    let incomplete = pull(
        app,
        token,
        &thin,
        json!({"pull_type": "soft", "consent": consent()}),
    )
    .await;
    assert_problem(
        incomplete,
        StatusCode::UNPROCESSABLE_ENTITY,
        "subject_incomplete",
    )
    .await;
}

/// The brief's route and the full report, whose every view is audited.
async fn assert_latest_and_report_audited(
    app: &TestApp,
    token: &str,
    id: &str,
    done: &Value,
    score: i64,
) {
    // The brief's route: the latest pull, never a new one.
    let latest: Value = app
        .client
        .get(app.url(&format!("/v1/credit-report/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(latest["id"], done["id"]);
    let report = app
        .client
        .get(app.url(&format!(
            "/v1/credit-reports/{}/report",
            done["id"].as_str().unwrap()
        )))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 200);
    let report: Value = report.json().await.unwrap();
    assert_eq!(report["score"], score);
    assert!(!report["tradelines"].as_array().unwrap().is_empty());
    let admin = app
        .client
        .get(app.url(&format!(
            "/v1/credit-reports/{}/report",
            done["id"].as_str().unwrap()
        )))
        .bearer_auth(oidc::access_token("admin").await)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 403, "admins see no report content");
    let viewed: i64 =
        sqlx::query_scalar("select count(*) from audit_log where action = 'credit_report.viewed'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(viewed, 1);
}

async fn assert_reissue_and_upgrade(app: &TestApp, token: &str, done: &Value, score: i64) {
    // Reissue (same report id) and upgrade (needs a hard-pull consent).
    let done_id = done["id"].as_str().unwrap();
    let reissued = app
        .create(
            token,
            &format!("/v1/credit-reports/{done_id}/reissue"),
            &json!({}),
        )
        .await;
    assert_eq!(reissued.status(), 202);
    let reissued = settled(
        app,
        token,
        reissued.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap(),
        20,
    )
    .await;
    assert_eq!(reissued["status"], "completed");
    assert_eq!(reissued["based_on"], done["id"]);
    assert_eq!(reissued["score"], score);
    let bare = app
        .create(
            token,
            &format!("/v1/credit-reports/{done_id}/upgrade"),
            &json!({}),
        )
        .await;
    assert_problem(bare, StatusCode::UNPROCESSABLE_ENTITY, "consent_required").await;
    let upgraded = app
        .create(
            token,
            &format!("/v1/credit-reports/{done_id}/upgrade"),
            &json!({"consent": consent()}),
        )
        .await;
    assert_eq!(upgraded.status(), 202);
    let upgraded = settled(
        app,
        token,
        upgraded.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap(),
        20,
    )
    .await;
    assert_eq!(
        (upgraded["status"].as_str(), upgraded["pull_type"].as_str()),
        (Some("completed"), Some("hard"))
    );
}

#[tokio::test]
async fn a_consented_pull_completes_and_its_report_is_audited() {
    let bureau = PrivateBureau::start().await;
    let app = crate::helpers::app()
        .workers_only(&["credit-worker"])
        .settings(|s| bureau.configure(s))
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let id = lead(&app, json!({})).await;

    // Consent and subject rules.
    assert_consent_and_subject_rules(&app, &token, &id).await;

    let response = pull(
        &app,
        &token,
        &id,
        json!({"pull_type": "soft", "consent": consent()}),
    )
    .await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let queued: Value = response.json().await.unwrap();
    assert_eq!(queued["status"], "queued");
    assert_eq!(
        location,
        format!("/v1/credit-reports/{}", queued["id"].as_str().unwrap())
    );
    let done = settled(&app, &token, queued["id"].as_str().unwrap(), 20).await;
    assert_eq!(done["status"], "completed", "{done}");
    let score = done["score"].as_i64().unwrap();
    assert!((300..=850).contains(&score));
    assert_eq!(done["bureau"], "simbureau");

    assert_latest_and_report_audited(&app, &token, &id, &done, score).await;

    assert_reissue_and_upgrade(&app, &token, &done, score).await;

    // Another team's agent sees none of it.
    let done_id = done["id"].as_str().unwrap();
    let outsider = oidc::access_token("agent-b1").await;
    let hidden = app
        .client
        .get(app.url(&format!("/v1/credit-reports/{done_id}")))
        .bearer_auth(&outsider)
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 404);
}

#[tokio::test]
async fn a_frozen_file_fails_at_once_and_flags_the_loan() {
    let bureau = PrivateBureau::start().await;
    let app = crate::helpers::app()
        .workers_only(&["credit-worker"])
        .settings(|s| bureau.configure(s))
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let id = lead(&app, json!({"ssn": "219-09-9001"})).await;
    let loan: Value = app
        .create(&token, "/v1/loans", &json!({"lead_id": id, "loan_type": "fha", "amount": "250000",
            "property": {"line1": "1 A St", "city": "Peoria", "state": "IL", "postal_code": "61602"}}))
        .await
        .json()
        .await
        .unwrap();
    let response = pull(
        &app,
        &token,
        &id,
        json!({"pull_type": "hard", "consent": consent()}),
    )
    .await;
    let queued: Value = response.json().await.unwrap();
    let done = settled(&app, &token, queued["id"].as_str().unwrap(), 20).await;
    assert_eq!(
        (done["status"].as_str(), done["failure_reason"].as_str()),
        (Some("failed"), Some("credit_freeze"))
    );
    assert_eq!(
        bureau.requests().await,
        1,
        "a permanent answer is not retried"
    );
    let loan: Value = app
        .client
        .get(app.url(&format!("/v1/loans/{}", loan["id"].as_str().unwrap())))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        loan["needs_attention"]["reason"]
            .as_str()
            .unwrap()
            .contains("credit_freeze"),
        "{loan}"
    );
    let events: i64 =
        sqlx::query_scalar("select count(*) from outbox where topic = 'loan.needs_attention'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(events, 1);
}

#[tokio::test]
async fn the_breaker_opens_on_a_dead_bureau_and_closes_when_it_recovers() {
    let bureau = PrivateBureau::start().await;
    let app = crate::helpers::app()
        .workers_only(&["credit-worker"])
        .settings(|s| {
            bureau.configure(s);
            s.bureau.breaker.min_requests = 3;
            s.bureau.breaker.failure_rate = 0.5;
            s.bureau.breaker.open_secs = 4;
        })
        .spawn()
        .await;
    bureau
        .control(json!({"error_rate": 1.0, "error_status": 503}))
        .await;
    let token = oidc::access_token("agent-a1").await;
    let id = lead(&app, json!({})).await;
    let mut pulls = Vec::new();
    for _ in 0..5 {
        let queued = soft_pull(&app, &token, &id).await;
        pulls.push(queued);
    }
    let opened = eventually(20, || async {
        app.state.bureau.breaker.state().as_str() == "open"
    })
    .await;
    assert!(opened, "the breaker opens after the threshold");
    // While open, nothing reaches the bureau.
    let at_open = bureau.requests().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    if app.state.bureau.breaker.state().as_str() == "open" {
        assert_eq!(
            bureau.requests().await,
            at_open,
            "no calls while the breaker is open"
        );
    }
    let (status, ready) = app.readyz().await;
    assert_eq!(status, 200, "an open breaker does not fail readiness");
    assert!(ready["integrations"]["bureau"].is_string());
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("loanfolio_circuit_state{integration=\"bureau\"}"),
        "{metrics}"
    );

    // The bureau recovers: a probe closes the breaker and every queued pull completes.
    bureau.control(json!({"reset": true})).await;
    for id in &pulls {
        let done = settled(&app, &token, id, 60).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    assert_eq!(app.state.bureau.breaker.state().as_str(), "closed");
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_the_bureaus_retry_after() {
    let bureau = PrivateBureau::start().await;
    let app = crate::helpers::app()
        .workers_only(&["credit-worker"])
        .settings(|s| bureau.configure(s))
        .spawn()
        .await;
    // The reserved SSN answers its first request 429 with this Retry-After, then 200. The
    // queue's first retry tier is 1 s: only honouring the header makes it wait 3.
    bureau.control(json!({"retry_after_secs": 3})).await;
    let token = oidc::access_token("agent-a1").await;
    let id = lead(&app, json!({"ssn": "219-09-9002"})).await;
    let asked = std::time::Instant::now();
    let queued = soft_pull(&app, &token, &id).await;
    let done = settled(&app, &token, &queued, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_secs(3),
        "retried after {waited:?}, before the bureau's Retry-After"
    );
    assert_eq!(bureau.requests().await, 2, "one 429, one success");
}

#[tokio::test]
async fn a_bureau_that_never_recovers_fails_the_pull_into_the_dlq() {
    let bureau = PrivateBureau::start().await;
    let app = crate::helpers::app()
        .workers_only(&["credit-worker"])
        .settings(|s| bureau.configure(s))
        .spawn()
        .await;
    bureau.control(json!({"down_for_secs": 3600})).await;
    let token = oidc::access_token("agent-a1").await;
    let id = lead(&app, json!({})).await;
    let loan: Value = app
        .create(&token, "/v1/loans", &json!({"lead_id": id, "loan_type": "va", "amount": "300000",
            "property": {"line1": "2 B St", "city": "Peoria", "state": "IL", "postal_code": "61602"}}))
        .await
        .json()
        .await
        .unwrap();
    let queued = soft_pull(&app, &token, &id).await;
    // The queue's backoff tiers (1, 2, 4, 8, 16, 30 s) run out after about a minute.
    let done = settled(&app, &token, &queued, 120).await;
    assert_eq!(
        (done["status"].as_str(), done["failure_reason"].as_str()),
        (Some("failed"), Some("bureau_unavailable"))
    );
    let prefix = app.state.settings.rabbitmq.prefix.clone();
    let letters = loanfolio::queue::dlq::list(&app.state.broker, &prefix, "credit-worker")
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "the message is in the DLQ");
    let loan: Value = app
        .client
        .get(app.url(&format!("/v1/loans/{}", loan["id"].as_str().unwrap())))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        loan["needs_attention"]["reason"]
            .as_str()
            .unwrap()
            .contains("bureau_unavailable")
    );
}

#[tokio::test]
async fn a_lead_created_with_consent_gets_its_pull_without_anyone_asking() {
    let bureau = PrivateBureau::start().await;
    let app = crate::helpers::app()
        .workers_only(&["credit-worker"])
        .settings(|s| bureau.configure(s))
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let mut with_consent = consent();
    with_consent["pull_type"] = json!("soft");
    let id = lead(&app, json!({"credit_consent": with_consent})).await;
    let ok = eventually(20, || async {
        let latest = app
            .client
            .get(app.url(&format!("/v1/credit-report/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        latest.status() == 200 && latest.json::<Value>().await.unwrap()["status"] == "completed"
    })
    .await;
    assert!(ok, "the saga's first step ran by itself");

    // An update carrying a consent requests that pull too.
    let agent = Client::new(&app, "agent-a1").await;
    let mut hard = with_consent.clone();
    hard["pull_type"] = json!("hard");
    let patched = agent
        .patch(
            &format!("/v1/leads/{id}"),
            Some("\"1\""),
            json!({"credit_consent": hard}),
        )
        .await;
    assert_eq!(patched.status(), 200);
    let ok = eventually(20, || async {
        let list: Value = app
            .client
            .get(app.url(&format!("/v1/leads/{id}/credit-reports")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = list["items"].as_array().unwrap();
        items.len() == 2
            && items.iter().all(|p| p["status"] == "completed")
            && items.iter().any(|p| p["pull_type"] == "hard")
    })
    .await;
    assert!(ok, "the update's pull completed");

    // A consent for a subject the bureau cannot be asked about refuses the whole lead.
    let mut body = full_lead();
    body["date_of_birth"] = Value::Null;
    body["credit_consent"] = with_consent.clone();
    let refused = agent.create(body).await;
    assert_problem(
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "subject_incomplete",
    )
    .await;
    let leads: i64 = sqlx::query_scalar("select count(*) from leads")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(leads, 1, "nothing half-written");
}

#[tokio::test]
async fn oauth2_client_credentials_instead_of_an_api_key() {
    let bureau = PrivateBureau::start_with(&["--oauth2-client", "loanfolio:s3cret-client"]).await;
    let token_url: url::Url = format!("{}oauth/token", bureau.url()).parse().unwrap();
    let app = crate::helpers::app()
        .workers_only(&["credit-worker"])
        .settings(|s| {
            // No API key at all: only the OAuth2 token can authorise the pull.
            s.bureau.base_url = bureau.url();
            s.bureau.oauth2 = Some(loanfolio::config::OAuth2Settings::new(
                token_url,
                "loanfolio",
                "s3cret-client",
            ));
        })
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let id = lead(&app, json!({})).await;
    let queued = soft_pull(&app, &token, &id).await;
    let done = settled(&app, &token, &queued, 20).await;
    assert_eq!(done["status"], "completed", "{done}");

    // A wrong client secret is a permanent failure, not a retry loop.
    let wrong = PrivateBureau::start_with(&["--oauth2-client", "loanfolio:other"]).await;
    let token_url: url::Url = format!("{}oauth/token", wrong.url()).parse().unwrap();
    let app = crate::helpers::app()
        .workers_only(&["credit-worker"])
        .settings(|s| {
            s.bureau.base_url = wrong.url();
            s.bureau.oauth2 = Some(loanfolio::config::OAuth2Settings::new(
                token_url,
                "loanfolio",
                "s3cret-client",
            ));
        })
        .spawn()
        .await;
    let id = lead(&app, json!({})).await;
    let queued = soft_pull(&app, &token, &id).await;
    let done = settled(&app, &token, &queued, 20).await;
    assert_eq!(
        (done["status"].as_str(), done["failure_reason"].as_str()),
        (Some("failed"), Some("bureau_unauthorized"))
    );
}
