//! Document reminders with the clock in the test's hands: the scheduler's round is called
//! with chosen times (`reminders::tick`), against a real database, the real notifier
//! consumer and a private SMTP server. Cadence, maximum, quiet hours and days, the stop
//! rules, the digest, one runner at a time, and the one-click unsubscribe.

use std::time::Duration;

use loanfolio::config::Schedule;
use loanfolio::notifications::reminders;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::flows::agent_a1_loan;
use crate::helpers::smtp::PrivateSmtp;
use crate::helpers::{TestApp, oidc};

fn at(rfc3339: &str) -> OffsetDateTime {
    OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap()
}

/// Monday 2026-11-30, 09:00 in New York.
fn t0() -> OffsetDateTime {
    at("2026-11-30T14:00:00Z")
}

fn days(d: f64) -> time::Duration {
    time::Duration::seconds_f64(d * 86_400.0)
}

fn configure(s: &mut loanfolio::config::Settings) {
    let r = &mut s.reminders;
    r.first_after_days = 2;
    r.every_days = 3;
    r.max_reminders = 2;
    r.quiet_hours_start = "20:00".into();
    r.quiet_hours_end = "08:00".into();
    r.quiet_days = vec!["sat".into(), "sun".into()];
    r.timezone = "America/New_York".into();
    r.digest_window_minutes = 60;
}

async fn start() -> (PrivateSmtp, TestApp, Schedule, String) {
    let smtp = PrivateSmtp::start().await;
    let app = crate::helpers::app()
        .workers_only(&["notifier"])
        .settings(|s| {
            smtp.configure(s);
            configure(s);
        })
        .spawn()
        .await;
    let schedule = Schedule::from_settings(&app.state.settings.reminders).unwrap();
    let token = oidc::access_token("agent-a1").await;
    (smtp, app, schedule, token)
}

/// A loan with an emailed link (its token and id) whose expiry lies beyond the test's clock.
async fn loan_with_link(app: &TestApp, token: &str, email: &str) -> (String, String, String) {
    let loan = agent_a1_loan(app, token).await;
    let response = app
        .create(
            token,
            &format!("/v1/loans/{loan}/upload-links"),
            &json!({"borrower_email": email}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let link: Value = response.json().await.unwrap();
    let id = link["id"].as_str().unwrap().to_owned();
    sqlx::query("update upload_links set expires_at = $2 where id = $1::uuid")
        .bind(&id)
        .bind(t0() + days(60.0))
        .execute(&app.state.db)
        .await
        .unwrap();
    (loan, link["token"].as_str().unwrap().to_owned(), id)
}

/// A document request created at `created` (the test's clock).
async fn request(
    app: &TestApp,
    token: &str,
    loan: &str,
    doc_type: &str,
    created: OffsetDateTime,
) -> String {
    let response = app
        .create(
            token,
            &format!("/v1/loans/{loan}/document-requests"),
            &json!({"doc_type": doc_type, "note": "the latest one"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    sqlx::query("update document_requests set created_at = $2 where id = $1::uuid")
        .bind(&id)
        .bind(created)
        .execute(&app.state.db)
        .await
        .unwrap();
    id
}

/// The reminders received by `address` so far (the invitation is not one).
fn reminders_to(smtp: &PrivateSmtp, address: &str) -> Vec<String> {
    smtp.messages_to(address)
        .into_iter()
        .filter(|m| m.contains("reminder"))
        .collect()
}

/// Wait until `address` has `count` reminders, then a little longer to catch extras.
async fn expect_reminders(smtp: &PrivateSmtp, address: &str, count: usize) -> Vec<String> {
    for _ in 0..200 {
        if reminders_to(smtp, address).len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let found = reminders_to(smtp, address);
    assert_eq!(found.len(), count, "reminders to {address}: {found:#?}");
    found
}

async fn tick(app: &TestApp, schedule: &Schedule, now: OffsetDateTime) -> usize {
    reminders::tick(&app.state, schedule, now).await.unwrap()
}

/// Wednesday 09:05 after the requests: r1 is due and r2 rides along; the first reminder.
async fn assert_the_first_digest(
    app: &TestApp,
    smtp: &PrivateSmtp,
    schedule: &Schedule,
    email: &str,
    link_token: &str,
) -> String {
    // Not due yet (first after 2 days).
    assert_eq!(
        tick(app, schedule, t0() + days(2.0) - time::Duration::hours(1)).await,
        0
    );
    // Wednesday 09:05: r1 is due; r2 (due 2 minutes later) rides along; r3 is a day away.
    assert_eq!(
        tick(app, schedule, t0() + days(2.0) + time::Duration::minutes(5)).await,
        1
    );
    let first = expect_reminders(smtp, email, 1).await.remove(0);
    assert!(first.contains("w2"), "{first}");
    assert!(first.contains("bank statement"), "{first}");
    assert!(!first.contains("pay stub"), "r3 is not due: {first}");
    assert!(
        first.contains(&format!("/u/{link_token}")),
        "the way back to the link"
    );
    assert!(
        first.contains("List-Unsubscribe: <") && first.contains("/v1/public/unsubscribe/"),
        "a reminder is not transactional: {first}"
    );
    // The same round again sends nothing twice.
    assert_eq!(
        tick(app, schedule, t0() + days(2.0) + time::Duration::minutes(6)).await,
        0
    );
    first
}

/// r3 waits out the quiet hours and is then reminded of alone.
async fn assert_r3_alone_after_quiet_hours(
    app: &TestApp,
    smtp: &PrivateSmtp,
    schedule: &Schedule,
    email: &str,
    first: &str,
) {
    // Thursday 21:00 local: r3 is due since 09:00, but it is quiet hours.
    assert_eq!(
        tick(app, schedule, t0() + days(3.0) + time::Duration::hours(12)).await,
        0
    );
    // Friday 09:00: r3's first reminder, alone.
    assert_eq!(tick(app, schedule, t0() + days(4.0)).await, 1);
    let second = expect_reminders(smtp, email, 2).await;
    let r3_only = second.iter().find(|m| *m != first).unwrap();
    assert!(
        r3_only.contains("pay stub") && !r3_only.contains("bank statement"),
        "{r3_only}"
    );
}

/// The quiet Saturday passes; on Monday r1 and r3 come in one digest, r2 (answered) not.
async fn assert_the_monday_digest(
    app: &TestApp,
    smtp: &PrivateSmtp,
    schedule: &Schedule,
    email: &str,
) {
    // Saturday 10:00: r1's second reminder fell due at 09:05 — a quiet day.
    assert_eq!(
        tick(app, schedule, t0() + days(5.0) + time::Duration::hours(1)).await,
        0
    );
    // Monday 09:00: r1 (overdue since Saturday) and r3 (due now) in one digest, r2 not.
    assert_eq!(tick(app, schedule, t0() + days(7.0)).await, 1);
    let third = expect_reminders(smtp, email, 3).await;
    let last = third
        .iter()
        .find(|m| m.contains("pay stub") && m.contains("w2"))
        .unwrap_or_else(|| panic!("a digest of r1 and r3: {third:#?}"));
    assert!(!last.contains("bank statement"), "{last}");
}

/// Both have had the maximum (2); r2 is answered: nothing more, ever.
async fn assert_nothing_after_the_maximum(
    app: &TestApp,
    schedule: &Schedule,
    loan: &str,
    [r1, r2, r3]: [&str; 3],
) {
    for d in [10.0, 14.0, 21.0] {
        assert_eq!(tick(app, schedule, t0() + days(d)).await, 0, "day {d}");
    }
    let counts: Vec<(String, i32)> = sqlx::query_as(
        "select id::text, reminders_sent from document_requests where loan_id = $1::uuid order by id",
    )
    .bind(loan)
    .fetch_all(&app.state.db)
    .await
    .unwrap();
    let sent = |id: &str| counts.iter().find(|(i, _)| i == id).unwrap().1;
    assert_eq!((sent(r1), sent(r2), sent(r3)), (2, 1, 2));
}

/// The borrower's file carries canaries (crate::helpers::flows::full_lead): no reminder holds an
/// SSN, date of birth or income in any form, nor the agent's note on a request.
fn assert_no_canary_in_reminders(all: &str) {
    use crate::helpers::flows::{DOB, INCOME, SSN, SSN_DIGITS};
    for canary in [
        SSN,
        SSN_DIGITS,
        DOB,
        "03/14/1971",
        INCOME,
        "87654",
        "the latest one",
    ] {
        assert!(!all.contains(canary), "{canary} in a reminder");
    }
    assert!(
        all.contains("pay stub"),
        "positive control: the scan reads the bodies"
    );
}

#[tokio::test]
async fn reminders_keep_the_cadence_quiet_hours_maximum_and_stop_rules_and_digest_requests_made_together()
 {
    let (smtp, app, schedule, token) = start().await;
    let email = "reminded@example.net";
    let (loan, link_token, _) = loan_with_link(&app, &token, email).await;
    // Two requests made together (a digest) and one a day later.
    let r1 = request(&app, &token, &loan, "w2", t0()).await;
    let r2 = request(
        &app,
        &token,
        &loan,
        "bank_statement",
        t0() + time::Duration::minutes(2),
    )
    .await;
    let r3 = request(&app, &token, &loan, "pay_stub", t0() + days(1.0)).await;

    let first = assert_the_first_digest(&app, &smtp, &schedule, email, &link_token).await;
    assert_r3_alone_after_quiet_hours(&app, &smtp, &schedule, email, &first).await;

    // The borrower says r2 does not apply: its reminders stop.
    let response = app
        .client
        .post(app.url(&format!(
            "/v1/public/upload-links/{link_token}/requests/{r2}/not-applicable"
        )))
        .json(&json!({"comment": "I have no other account"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    assert_the_monday_digest(&app, &smtp, &schedule, email).await;
    assert_nothing_after_the_maximum(&app, &schedule, &loan, [&r1, &r2, &r3]).await;
    let all = expect_reminders(&smtp, email, 3).await.join("\n");
    assert_no_canary_in_reminders(&all);
}

/// The path of the one-click unsubscribe URL in a reminder's headers.
fn unsubscribe_path(message: &str) -> &str {
    let start = message.find("List-Unsubscribe: <").unwrap() + "List-Unsubscribe: <".len();
    let url = &message[start..start + message[start..].find('>').unwrap()];
    &url[url.find("/v1/public/unsubscribe/").unwrap()..]
}

/// The unsubscribe state at `path`, as JSON.
async fn unsubscribe_state(app: &TestApp, path: &str) -> Value {
    app.client
        .get(app.url(path))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Opening the link (a mail scanner, a HEAD, the borrower) changes nothing: a page with
/// a button.
async fn assert_opening_the_link_changes_nothing(app: &TestApp, path: &str) {
    let page = app.get(path).await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\""));
    let head = app.client.head(app.url(path)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let state = unsubscribe_state(app, path).await;
    assert_eq!(state["unsubscribed"], false, "GET and HEAD change nothing");
}

/// The one-click POST (RFC 8058), twice: idempotent, recorded once.
async fn assert_one_click_unsubscribes_once(app: &TestApp, path: &str) {
    for _ in 0..2 {
        let done = app
            .client
            .post(app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 200);
        assert!(done.text().await.unwrap().contains("You are unsubscribed"));
    }
    let state = unsubscribe_state(app, path).await;
    assert_eq!(state["unsubscribed"], true);
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'lead.email_unsubscribed'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(audited, 1);
}

#[tokio::test]
async fn reminders_stop_when_the_borrower_unsubscribes_or_the_link_is_revoked() {
    let (smtp, app, schedule, token) = start().await;
    // Three borrowers, one request each, made at t0: one will unsubscribe, one's link is
    // revoked before any reminder, and a control that does neither.
    let email = "unsubscriber@example.net";
    let control = "control@example.net";
    let revoked = "revoked@example.net";
    let (loan, _, _) = loan_with_link(&app, &token, email).await;
    request(&app, &token, &loan, "tax_return", t0()).await;
    let (loan_c, _, _) = loan_with_link(&app, &token, control).await;
    request(&app, &token, &loan_c, "tax_return", t0()).await;
    let (loan_r, _, link_r) = loan_with_link(&app, &token, revoked).await;
    request(&app, &token, &loan_r, "photo_id", t0()).await;
    let response = app
        .client
        .delete(app.url(&format!("/v1/upload-links/{link_r}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    // Wednesday 09:00: the first reminders — not to the borrower whose link is revoked.
    assert_eq!(tick(&app, &schedule, t0() + days(2.0)).await, 2);
    let message = expect_reminders(&smtp, email, 1).await.remove(0);
    expect_reminders(&smtp, control, 1).await;
    assert!(
        message.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{message}"
    );
    let path = unsubscribe_path(&message);
    assert_opening_the_link_changes_nothing(&app, path).await;
    assert_one_click_unsubscribes_once(&app, path).await;
    let unknown = app.get("/v1/public/unsubscribe/not-a-real-token").await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.headers()["content-type"],
        "application/problem+json"
    );

    // The next Monday: the second reminders are due (since Saturday): the control gets its
    // own, the unsubscribed borrower none, the revoked link's borrower still none.
    assert_eq!(tick(&app, &schedule, t0() + days(7.0)).await, 1);
    expect_reminders(&smtp, control, 2).await;
    assert_eq!(reminders_to(&smtp, email).len(), 1);
    assert!(reminders_to(&smtp, revoked).is_empty());
}

#[tokio::test]
async fn concurrent_rounds_on_several_replicas_send_each_reminder_once() {
    let (smtp, app, schedule, token) = start().await;
    let email = "raced@example.net";
    let (loan, _, _) = loan_with_link(&app, &token, email).await;
    request(&app, &token, &loan, "w2", t0()).await;
    // Ten "replicas" run the same round at once: one message.
    let now = t0() + days(2.0);
    let rounds =
        futures::future::join_all((0..10).map(|_| reminders::tick(&app.state, &schedule, now)))
            .await;
    let queued: usize = rounds.into_iter().map(Result::unwrap).sum();
    assert_eq!(queued, 1);
    expect_reminders(&smtp, email, 1).await;
}
