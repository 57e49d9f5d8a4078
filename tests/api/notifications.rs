//! Notifications through a real SMTP server (a private aiosmtpd per test): the borrower's
//! link invitation works, a rejection reaches the borrower with its reason, a status change
//! reaches borrower and agent once each, an SMTP outage delays but loses nothing, and no
//! message carries borrower PII.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::flows;
use crate::helpers::flows::agent_a1_loan;
use crate::helpers::flows::{DOB, INCOME, SSN, SSN_DIGITS};
use crate::helpers::smtp::{PrivateSmtp, decoded};
use crate::helpers::{TestApp, eventually, oidc};

async fn wait_for(smtp: &PrivateSmtp, address: &str, count: usize, seconds: u64) -> Vec<String> {
    for _ in 0..seconds * 10 {
        let found = smtp.messages_to(address);
        if found.len() >= count {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{count} message(s) to {address} never arrived; have {:?}",
        smtp.messages().len()
    );
}

async fn link_with_email(app: &TestApp, token: &str, loan: &str, email: &str) -> Value {
    let response = app
        .create(
            token,
            &format!("/v1/loans/{loan}/upload-links"),
            &json!({"borrower_email": email}),
        )
        .await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// The invitation's token, once its link is shown to open the borrower's link state.
async fn invitation_secret(app: &TestApp, smtp: &PrivateSmtp, token: &str, loan: &str) -> String {
    link_with_email(app, token, loan, "invitee@example.net").await;
    let invitation = wait_for(smtp, "invitee@example.net", 1, 20).await.remove(0);
    let start = invitation.find("/u/").expect("a link in the invitation");
    let secret: String = invitation[start + 3..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let state = app.get(&format!("/v1/public/upload-links/{secret}")).await;
    assert_eq!(state.status(), 200, "the emailed link works");
    assert!(invitation.contains("Message-ID: <"), "{invitation}");
    secret
}

async fn assert_a_rejection_reaches_the_invitee(
    app: &TestApp,
    smtp: &PrivateSmtp,
    token: &str,
    secret: &str,
) {
    // A file through the link, rejected by the agent: the borrower gets the reason.
    let pdf = b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<< /Root 1 0 R >>\n%%EOF\n";
    let doc = flows::borrower_upload(
        app,
        secret,
        &json!({"filename": "w2.pdf", "content_type": "application/pdf", "size_bytes": pdf.len(), "doc_type": "w2"}),
        pdf,
    )
    .await;
    eventually!(
        30,
        || async {
            let d: Value = app
                .client
                .get(app.url(&format!("/v1/documents/{doc}")))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            d["state"] == "available"
        },
        "document {doc} never became available"
    );
    let reviewed = app
        .client
        .post(app.url(&format!("/v1/documents/{doc}/review")))
        .bearer_auth(token)
        .json(&json!({"decision": "reject", "reason": "Page 2 is missing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reviewed.status(), 200);
    // The file came through the invitee's link: the reason and the way back go to the
    // address that link was issued to — never a link's token to anyone else (the lead's
    // own address received the invitee's token before).
    let rejection = wait_for(smtp, "invitee@example.net", 2, 20).await;
    assert!(
        rejection
            .iter()
            .any(|m| m.contains("Page 2 is missing") && m.contains(&format!("/u/{secret}"))),
        "{rejection:?}"
    );
}

async fn assert_a_status_change_heard_once(
    app: &TestApp,
    smtp: &PrivateSmtp,
    token: &str,
    loan: &str,
    secret: &str,
) {
    // A status change: one message to the borrower and one to the agent, whatever the redeliveries.
    let borrower = crate::helpers::flows::EMAIL;
    let moved = app
        .client
        .post(app.url(&format!("/v1/loans/{loan}/status")))
        .bearer_auth(token)
        .header("If-Match", "\"1\"")
        .json(&json!({"status": "submitted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    let to_borrower = wait_for(smtp, borrower, 1, 20).await;
    assert!(to_borrower.iter().any(|m| m.contains("submitted")));
    let agent: Option<String> =
        sqlx::query_scalar("select email from agents where subject = 'agent-a1'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    let agent = agent.expect("the agent has an email address");
    let agent_status = eventually(20, || async {
        smtp.messages_to(&agent)
            .iter()
            .any(|m| m.contains("Loan status: submitted"))
    })
    .await;
    assert!(agent_status, "the agent hears about the status change");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status_mails = smtp
        .messages_to(borrower)
        .iter()
        .filter(|m| m.contains("is now: submitted"))
        .count();
    assert_eq!(status_mails, 1, "exactly once");
    assert!(
        smtp.messages_to(borrower)
            .iter()
            .all(|m| !decoded(m).contains(secret)),
        "another recipient's link token reached the lead's address"
    );
}

#[tokio::test]
async fn borrowers_and_agents_hear_about_links_rejections_and_status_changes_once() {
    let smtp = PrivateSmtp::start().await;
    let app = crate::helpers::app()
        .workers_only(&["document-pipeline", "notifier"])
        .settings(|s| smtp.configure(s))
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;

    // The invitation: its link opens the borrower's link state.
    let secret = invitation_secret(&app, &smtp, &token, &loan).await;

    assert_a_rejection_reaches_the_invitee(&app, &smtp, &token, &secret).await;

    assert_a_status_change_heard_once(&app, &smtp, &token, &loan, &secret).await;

    // What was sent about the loan, recipients masked.
    let borrower = crate::helpers::flows::EMAIL;
    let list: Value = app
        .client
        .get(app.url(&format!("/v1/loans/{loan}/notifications")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = list["items"].as_array().unwrap();
    assert!(
        items.iter().any(|n| n["template"] == "link_invitation"
            && n["recipient"] == "i***@example.net"
            && n["state"] == "sent"),
        "{list}"
    );
    assert!(
        !list.to_string().contains(borrower),
        "recipients are masked"
    );

    // No message carries an SSN, date of birth or income, in any form (positive control below).
    let all = smtp
        .messages()
        .iter()
        .map(|m| decoded(m))
        .collect::<Vec<_>>()
        .join("\n");
    for canary in [SSN, SSN_DIGITS, DOB, "03/14/1971", INCOME, "87654"] {
        assert!(!all.contains(canary), "{canary} in a message");
    }
    assert!(
        all.contains("Page 2 is missing"),
        "the scan reads the message bodies"
    );
}

#[tokio::test]
async fn an_smtp_outage_delays_messages_but_loses_and_duplicates_none() {
    let mut smtp = PrivateSmtp::start().await;
    let app = crate::helpers::app()
        .workers_only(&["document-pipeline", "notifier"])
        .settings(|s| smtp.configure(s))
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    smtp.stop().await;
    for i in 0..3 {
        link_with_email(&app, &token, &loan, &format!("burst{i}@example.net")).await;
    }
    let waiting = eventually(20, || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from notifications where state = 'queued' and last_error is not null",
        )
        .fetch_one(&app.state.db)
        .await
        .unwrap();
        n == 3
    })
    .await;
    assert!(waiting, "the messages wait, with the reason");
    smtp.restart().await;
    for i in 0..3 {
        wait_for(&smtp, &format!("burst{i}@example.net"), 1, 60).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.messages().len(), 3, "nothing sent twice");
    let sent: i64 = sqlx::query_scalar("select count(*) from notifications where state = 'sent'")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(sent, 3);
}

#[tokio::test]
async fn a_permanent_smtp_refusal_ends_failed_with_the_reason_and_is_not_retried() {
    let smtp = PrivateSmtp::start().await;
    let app = crate::helpers::app()
        .workers_only(&["notifier"])
        .settings(|s| smtp.configure(s))
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    // The server answers RCPT with 550 for this mailbox; the next address is fine.
    link_with_email(&app, &token, &loan, "bounce-me@example.net").await;
    link_with_email(&app, &token, &loan, "accepted@example.net").await;
    wait_for(&smtp, "accepted@example.net", 1, 30).await;
    let failed = eventually(20, || async {
        let list: Value = app
            .client
            .get(app.url(&format!("/v1/loans/{loan}/notifications")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["items"].as_array().unwrap().iter().any(|n| {
            n["state"] == "failed"
                && n["recipient"] == "b***@example.net"
                && n["last_error"].as_str().is_some_and(|e| e.contains("550"))
                && n["attempts"] == 1
        })
    })
    .await;
    assert!(
        failed,
        "the refusal ends `failed` with the SMTP status as the reason"
    );
    // Not retried: one attempt, and the queue holds nothing for it (no dead letter either).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (attempts, reason): (i32, String) =
        sqlx::query_as("select attempts, last_error from notifications where state = 'failed'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(attempts, 1);
    assert!(
        !reason.contains("bounce-me"),
        "no address in the reason: {reason}"
    );
    assert_eq!(smtp.messages_to("bounce-me@example.net").len(), 0);
    // The event was handled (acknowledged), not retried into the dead-letter queue.
    let letters = loanfolio::queue::dlq::list(
        &app.state.broker,
        &app.state.settings.rabbitmq.prefix,
        "notifier",
    )
    .await
    .unwrap();
    assert!(letters.is_empty(), "{letters:?}");
}

/// A link's event taken out of the outbox of `api` (an app without workers), so that the
/// test can deliver it itself: its id, its payload and the database it is in.
async fn undelivered_link_event(api: &TestApp) -> (uuid::Uuid, Value, String) {
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(api, &token).await;
    link_with_email(api, &token, &loan, "late@example.net").await;
    let (event_id, payload): (uuid::Uuid, Value) = sqlx::query_as(
        "delete from outbox where topic = 'upload_link.created' returning id, payload",
    )
    .fetch_one(&api.state.db)
    .await
    .unwrap();
    let db: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&api.state.db)
        .await
        .unwrap();
    (event_id, payload, db)
}

/// Publish the event to the notifier's queue as the last of its retries.
async fn deliver_on_its_last_attempt(
    app: &TestApp,
    prefix: &str,
    event_id: uuid::Uuid,
    payload: &Value,
) {
    use lapin::options::BasicPublishOptions;
    use lapin::types::{AMQPValue, FieldTable};
    let mut headers = FieldTable::default();
    headers.insert("x-attempt".into(), AMQPValue::LongInt(6));
    app.state
        .broker
        .channel()
        .await
        .unwrap()
        .basic_publish(
            "".into(),
            format!("{prefix}.notifier").as_str().into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(payload).unwrap(),
            lapin::BasicProperties::default()
                .with_message_id(event_id.to_string().as_str().into())
                .with_type("upload_link.created".into())
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn assert_failed_and_dead_lettered(app: &TestApp, prefix: &str) {
    let exhausted = eventually(20, || async {
        // The row exists (queued, no error yet) from just before the send attempt.
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("select state, last_error from notifications")
                .fetch_optional(&app.state.db)
                .await
                .unwrap();
        matches!(row, Some((state, Some(error))) if state == "failed" && error.starts_with("retries exhausted"))
    })
    .await;
    assert!(exhausted, "the notification failed with the reason");
    assert!(
        eventually(10, || async {
            loanfolio::queue::dlq::depth(&app.state.broker, prefix, "notifier")
                .await
                .unwrap()
                == 1
        })
        .await,
        "the message waits in the DLQ"
    );
}

/// The operator replays the DLQ: the message goes out, once.
async fn assert_a_replay_sends_it_once(app: &TestApp, smtp: &PrivateSmtp, prefix: &str) {
    let moved = loanfolio::queue::dlq::replay(&app.state.broker, prefix, "notifier")
        .await
        .unwrap();
    assert_eq!(moved, 1);
    wait_for(smtp, "late@example.net", 1, 20).await;
    eventually!(
        10,
        || async {
            let state: String = sqlx::query_scalar("select state from notifications")
                .fetch_one(&app.state.db)
                .await
                .unwrap();
            state == "sent"
        },
        "the replayed notification is not `sent`"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.messages().len(), 1, "sent once");
    assert_eq!(
        loanfolio::queue::dlq::depth(&app.state.broker, prefix, "notifier")
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_message_that_ran_out_of_retries_is_sent_by_a_dlq_replay() {
    let api = crate::helpers::app().spawn().await;
    let (event_id, payload, db) = undelivered_link_event(&api).await;
    let mut smtp = PrivateSmtp::start().await;
    let app = crate::helpers::app()
        .workers_only(&["notifier"])
        .settings(|s| smtp.configure(s))
        .shared_database(db)
        .spawn()
        .await;
    let prefix = app.state.settings.rabbitmq.prefix.clone();
    eventually!(
        20,
        || async {
            loanfolio::queue::dlq::depth(&app.state.broker, &prefix, "notifier")
                .await
                .is_ok()
        },
        "the notifier's dead-letter queue is never declared"
    );

    // SMTP is down while the event arrives on its last attempt: it runs out of retries.
    smtp.stop().await;
    deliver_on_its_last_attempt(&app, &prefix, event_id, &payload).await;
    assert_failed_and_dead_lettered(&app, &prefix).await;

    smtp.restart().await;
    assert_a_replay_sends_it_once(&app, &smtp, &prefix).await;
}

/// A local HTTP receiver standing in for the site's SMS provider: it records every POST.
async fn sms_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(Option<String>, Value)>>>,
) {
    use axum::routing::post;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/messages",
        post(
            move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let store = store.clone();
                async move {
                    let auth = headers
                        .get("x-api-key")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    store.lock().unwrap().push((auth, body));
                    axum::Json(json!({"id": "sms-1"}))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/messages", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

async fn transition(app: &TestApp, token: &str, loan: &str, version: &str, status: &str) {
    let response = app
        .client
        .post(app.url(&format!("/v1/loans/{loan}/status")))
        .bearer_auth(token)
        .header("If-Match", version)
        .json(&json!({"status": status}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn no_sms_without_an_opt_in_and_none_after_an_opt_out() {
    let smtp = PrivateSmtp::start().await;
    let (gateway, seen) = sms_receiver().await;
    let app = crate::helpers::app()
        .workers_only(&["notifier"])
        .settings(|s| {
            smtp.configure(s);
            s.notifications.sms.gateway_url = Some(gateway.parse().unwrap());
            s.notifications.sms.auth_header = "X-Api-Key".into();
            s.notifications.sms.set_auth_token("sms-token");
        })
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = agent_a1_loan(&app, &token).await;
    let lead: Value = app
        .client
        .get(app.url(&format!("/v1/loans/{loan}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lead = lead["lead_id"].as_str().unwrap().to_owned();
    let borrower = crate::helpers::flows::EMAIL;

    // No opt-in: the status change is emailed, never texted.
    transition(&app, &token, &loan, "\"1\"", "submitted").await;
    wait_for(&smtp, borrower, 1, 20).await;
    assert!(seen.lock().unwrap().is_empty(), "an SMS without opt-in");

    // With the opt-in: one SMS, to the lead's phone, with the gateway's auth header.
    let consent = app
        .client
        .post(app.url(&format!("/v1/leads/{lead}/sms-consent")))
        .bearer_auth(&token)
        .json(&json!({"obtained_at": "2026-11-20T09:00:00Z", "method": "written"}))
        .send()
        .await
        .unwrap();
    assert_eq!(consent.status(), 200);
    transition(&app, &token, &loan, "\"2\"", "withdrawn").await;
    wait_for(&smtp, borrower, 2, 20).await;
    let texted = eventually(20, || async { seen.lock().unwrap().len() == 1 }).await;
    assert!(texted, "one SMS after the opt-in");
    let (auth, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(auth.as_deref(), Some("sms-token"));
    assert_eq!(body["to"], crate::helpers::flows::PHONE);
    assert!(body["body"].as_str().unwrap().contains("withdrawn"));

    // Opted out: none, at once.
    let out = app
        .client
        .delete(app.url(&format!("/v1/leads/{lead}/sms-consent")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let second = app
        .create(&token, "/v1/loans", &json!({"lead_id": lead, "loan_type": "fha", "amount": "200000",
            "property": {"line1": "3 C St", "city": "Peoria", "state": "IL", "postal_code": "61602"}}))
        .await;
    let second: Value = second.json().await.unwrap();
    transition(
        &app,
        &token,
        second["id"].as_str().unwrap(),
        "\"1\"",
        "submitted",
    )
    .await;
    wait_for(&smtp, borrower, 3, 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seen.lock().unwrap().len(), 1, "no SMS after the opt-out");
}

/// A link made in Spanish invites its borrower in Spanish (issue "Agent console", Must show 5).
#[tokio::test]
async fn a_spanish_link_sends_a_spanish_invitation() {
    let smtp = PrivateSmtp::start().await;
    let app = crate::helpers::app()
        .workers_only(&["notifier"])
        .settings(|s| smtp.configure(s))
        .spawn()
        .await;
    let token = oidc::access_token("agent-a1").await;
    let loan = crate::helpers::flows::agent_a1_loan(&app, &token).await;
    let response = app
        .create(
            &token,
            &format!("/v1/loans/{loan}/upload-links"),
            &json!({"borrower_email": "ana@example.net", "language": "es"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["language"], "es");
    let mail = decoded(&wait_for(&smtp, "ana@example.net", 1, 20).await.remove(0));
    assert!(
        mail.contains("por favor, suba sus documentos"),
        "a Spanish subject: {mail}"
    );
    assert!(
        mail.contains("le pide que suba documentos"),
        "a Spanish body: {mail}"
    );
    assert!(mail.contains("El enlace es personal"), "{mail}");
    assert!(mail.contains("/u/"), "the link is in it");
    assert!(
        !mail.contains("asks you to upload"),
        "no English left: {mail}"
    );
    // An unknown language is the API's 422, not a silent default.
    let response = app
        .create(
            &token,
            &format!("/v1/loans/{loan}/upload-links"),
            &json!({"borrower_email": "ana@example.net", "language": "fr"}),
        )
        .await;
    assert_eq!(response.status(), 422);
}
