//! The LOS: automatic submission when a loan is submitted, milestones through the signed
//! webhook (every documented answer), and the reconciliation that repairs a lost webhook.

use serde_json::{Value, json};

use crate::helpers::flows::agent_a1_loan;
use crate::helpers::los::{PrivateLos, WEBHOOK_SECRET};
use crate::helpers::{TestApp, eventually, oidc};

async fn loan(app: &TestApp, token: &str, id: &str) -> Value {
    app.client
        .get(app.url(&format!("/v1/loans/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn submit(app: &TestApp, token: &str, id: &str) {
    let response = app
        .client
        .post(app.url(&format!("/v1/loans/{id}/status")))
        .bearer_auth(token)
        .header("If-Match", "\"1\"")
        .json(&json!({"status": "submitted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn history(app: &TestApp, token: &str, id: &str) -> Vec<Value> {
    let body: Value = app
        .client
        .get(app.url(&format!("/v1/loans/{id}/history")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["items"]
        .as_array()
        .cloned()
        .expect("the history is a list envelope")
}

#[tokio::test]
async fn submitted_loans_reach_the_los_and_follow_its_milestones() {
    let mut los = PrivateLos::reserve();
    let app = crate::helpers::app()
        .workers_only(&[loanfolio::events::LOS_SUBMITTER])
        .settings(|s| los.configure(s))
        .spawn()
        .await;
    los.start(&app.url("/v1/webhooks/los")).await;
    let token = oidc::access_token("agent-a1").await;
    let id = agent_a1_loan(&app, &token).await;
    submit(&app, &token, &id).await;

    let stored = eventually(20, || async {
        loan(&app, &token, &id).await["los_loan_id"].is_string()
    })
    .await;
    assert!(stored, "the LOS id is stored");
    let los_id = loan(&app, &token, &id).await["los_loan_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Webhook: underwriting.
    let sent = los.milestone(&los_id, "underwriting", true).await;
    assert_eq!(sent["delivered"], 204, "{sent}");
    let current = loan(&app, &token, &id).await;
    assert_eq!(current["status"], "underwriting");
    let steps = history(&app, &token, &id).await;
    assert_eq!(steps.last().unwrap()["to"], "underwriting");
    assert_eq!(steps.last().unwrap()["actor"], "system:los");

    // `approved` is recorded without a status change.
    assert_eq!(
        los.milestone(&los_id, "approved", true).await["delivered"],
        204
    );
    let current = loan(&app, &token, &id).await;
    assert_eq!(current["status"], "underwriting");

    // A lost webhook: the LOS says closed, nobody tells us; the reconciliation repairs it.
    let lost = los.milestone(&los_id, "closed", false).await;
    assert!(lost["delivered"].is_null());
    assert_eq!(loan(&app, &token, &id).await["status"], "underwriting");
    let applied = loanfolio::los::worker::reconcile_once(&app.state)
        .await
        .unwrap();
    assert_eq!(applied, 1);
    assert_eq!(loan(&app, &token, &id).await["status"], "closed");

    let events: Vec<String> = sqlx::query_scalar(
        "select payload->>'newStatus' from outbox where topic = 'loan.status.changed' order by id",
    )
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    assert_eq!(events, ["submitted", "underwriting", "closed"]);
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'loan.status_changed' and actor_subject = 'system:los'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(audited, 2);
}

fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    let hex: String = ring::hmac::sign(&key, &message)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

async fn deliver(app: &TestApp, body: &[u8], signature: &str) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/v1/webhooks/los"))
        .header("content-type", "application/json")
        .header("Loanfolio-Signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn event(event_id: &str, los_loan_id: &str, milestone: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"event_id": event_id, "type": "loan.milestone", "los_loan_id": los_loan_id,
        "milestone": milestone, "occurred_at": "2026-11-26T12:00:00Z"}),
    )
    .unwrap()
}

/// Refusals of `body` (a valid event): bad signatures, stale timestamps, junk and invalid bodies.
async fn assert_refusals(app: &TestApp, body: &[u8]) {
    // Bad signature, stale timestamp: 401 with their codes, nothing applied.
    let (status, problem) = deliver(app, body, &sign("wrong", now(), body)).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some("invalid_signature"))
    );
    let (status, _) = deliver(app, body, "garbage").await;
    assert_eq!(status, 401);
    let (status, problem) = deliver(app, body, &sign(WEBHOOK_SECRET, now() - 301, body)).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some("stale_timestamp"))
    );
    // Malformed and invalid bodies.
    let junk = b"{not json";
    let (status, problem) = deliver(app, junk, &sign(WEBHOOK_SECRET, now(), junk)).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("malformed_json"))
    );
    let odd = event("e-x", "LOS-77", "teleported");
    let (status, problem) = deliver(app, &odd, &sign(WEBHOOK_SECRET, now(), &odd)).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("validation_failed"))
    );
}

#[tokio::test]
async fn the_webhook_answers_as_documented_and_applies_each_event_once() {
    let app = crate::helpers::app()
        .settings(|s| s.los.set_webhook_secrets(&["old-secret", WEBHOOK_SECRET]))
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let id = agent_a1_loan(&app, &token).await;
    submit(&app, &token, &id).await;
    sqlx::query("update loans set los_loan_id = 'LOS-77' where id = $1::uuid")
        .bind(&id)
        .execute(&app.state.db)
        .await
        .unwrap();
    let statuses = || async { history(&app, &token, &id).await.len() };
    let before = statuses().await;

    let body = event("e-1", "LOS-77", "underwriting");
    assert_refusals(&app, &body).await;
    // Unknown loan and an impossible milestone: recorded, not applied.
    let unknown = event("e-2", "LOS-404", "underwriting");
    assert_eq!(
        deliver(&app, &unknown, &sign(WEBHOOK_SECRET, now(), &unknown))
            .await
            .0,
        202
    );
    let impossible = event("e-3", "LOS-77", "closed");
    assert_eq!(
        deliver(&app, &impossible, &sign(WEBHOOK_SECRET, now(), &impossible))
            .await
            .0,
        202
    );
    assert_eq!(statuses().await, before, "no state change so far");

    // Valid (signed with the old secret during a rotation): applied; replayed: 204, once.
    assert_eq!(
        deliver(&app, &body, &sign("old-secret", now(), &body))
            .await
            .0,
        204
    );
    assert_eq!(
        deliver(&app, &body, &sign(WEBHOOK_SECRET, now(), &body))
            .await
            .0,
        204
    );
    assert_eq!(statuses().await, before + 1);
    assert_eq!(loan(&app, &token, &id).await["status"], "underwriting");

    // Ten concurrent deliveries of one event: one transition.
    let denied = event("e-4", "LOS-77", "denied");
    let signature = sign(WEBHOOK_SECRET, now(), &denied);
    let answers =
        futures::future::join_all((0..10).map(|_| deliver(&app, &denied, &signature))).await;
    assert!(answers.iter().all(|(s, _)| *s == 204), "{answers:?}");
    assert_eq!(statuses().await, before + 2);
    assert_eq!(loan(&app, &token, &id).await["status"], "denied");
    let outcomes: Vec<(String, String)> =
        sqlx::query_as("select event_id, outcome from los_webhook_events order by event_id")
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    assert_eq!(
        outcomes,
        [
            ("e-1", "applied"),
            ("e-2", "unknown_loan"),
            ("e-3", "not_allowed"),
            ("e-4", "applied")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
}

/// Send only a request's head (declaring `content_length` body bytes that never come) and
/// read the answer: proof that the service answered without reading the body.
async fn head_only(app: &TestApp, signature: &str, content_length: usize) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    let head = format!(
        "POST /v1/webhooks/los HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\nloanfolio-signature: {signature}\r\ncontent-length: {content_length}\r\n\r\n",
        app.address
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length || n == 0 {
                    let status = head[9..12].parse().unwrap();
                    return (status, serde_json::from_str(body).unwrap_or(Value::Null));
                }
            }
            assert!(n > 0, "the connection closed before an answer");
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .expect("the service waited for the body instead of answering from the header")
}

/// Defect: `parse_signature` took any number of `v1=` values of any length and `verify`
/// recomputed the HMAC over the whole body for each value × secret before the timestamp
/// was checked — one forged request cost seconds of a core. Now the header is judged
/// before the body is read, and a request costs at most one HMAC per secret.
#[tokio::test]
async fn forged_webhooks_are_refused_from_the_header_without_reading_the_body() {
    let app = crate::helpers::app()
        .settings(|s| {
            s.los.set_webhook_secrets(&["old-secret", WEBHOOK_SECRET]);
            s.los.webhook_body_limit_bytes = 256 * 1024;
        })
        .spawn()
        .await;
    let mib = 1 << 20;
    let thousands = format!(
        "t={}{}",
        now(),
        format!(",v1={}", "ab".repeat(32)).repeat(2000)
    );
    let six = format!(
        "t={}{}",
        now(),
        format!(",v1={}", "ab".repeat(32)).repeat(6)
    );
    let long_value = format!("t={},v1={}", now(), "ab".repeat(40));
    let upper = format!("t={},v1={}", now(), "AB".repeat(32));
    for forged in [
        &thousands,
        &six,
        &long_value,
        &upper,
        &"t=1,v1=zz".to_owned(),
    ] {
        let (status, problem) = head_only(&app, forged, mib).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (401, Some("invalid_signature")),
            "{forged:.60}"
        );
    }
    let stale = format!("t={},v1={}", now() - 301, "ab".repeat(32));
    let (status, problem) = head_only(&app, &stale, mib).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some("stale_timestamp"))
    );
    // A well-formed, fresh header with a body over the limit: 413, still unread.
    let fresh = format!("t={},v1={}", now(), "ab".repeat(32));
    let (status, problem) = head_only(&app, &fresh, 256 * 1024 + 1).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let keys = app.state.webhook_keys.current().unwrap();
    assert_eq!(keys.hmacs_computed(), 0, "no HMAC for a refused header");

    // A chunked body (no Content-Length) over the limit is cut off at the limit.
    let big = vec![b' '; 300 * 1024];
    let response = app
        .client
        .post(app.url("/v1/webhooks/los"))
        .header("Loanfolio-Signature", sign(WEBHOOK_SECRET, now(), &big))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(
            big.chunks(64 * 1024)
                .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                .collect::<Vec<_>>(),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    // Five forged candidates on a real body: one HMAC per secret (two), not ten.
    let body = event("e-9", "LOS-1", "underwriting");
    let five = format!(
        "t={}{}",
        now(),
        format!(",v1={}", "cd".repeat(32)).repeat(5)
    );
    let (status, _) = deliver(&app, &body, &five).await;
    assert_eq!(status, 401);
    assert_eq!(keys.hmacs_computed(), 2);
}
