//! Notifications at scale (issue 7's number): 10,000 notifications from outbox events
//! through the notifier to a local SMTP server (a private aiosmtpd), messages/s and the
//! latency from the event's commit to SMTP acceptance, next to the raw send rate of the same
//! SMTP client (the service's `Mailer`, same template, same concurrency) in the same run.
//!
//! Two phases after the raw baseline: a burst of 10,000 events at once (throughput; its
//! latency is mostly queueing), then a paced phase at half the burst's rate (the latency a
//! message sees when the system keeps up).
//!
//! `scripts/bench notify` (release build).

#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../tests/api/helpers/mod.rs"]
mod helpers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

const NOTIFICATIONS: usize = 10_000;
const RAW_MESSAGES: usize = 2_000;
const PACED: usize = 1_000;
/// The notifier's prefetch: messages in flight at once.
const CONCURRENCY: usize = 8;

/// Insert `n` `upload_link.created` events for one link (each a distinct message, so each
/// is its own notification), in one transaction.
async fn emit(db: &sqlx::PgPool, loan: &str, link: &str, n: usize) {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let payload = json!({"loanId": loan, "linkId": link});
    sqlx::query(
        "insert into outbox (id, topic, payload, headers)
         select id, 'upload_link.created', $2, '{}' from unnest($1::uuid[]) as id",
    )
    .bind(&ids)
    .bind(payload)
    .execute(db)
    .await
    .unwrap();
}

async fn sent(db: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from notifications where state = 'sent'")
        .fetch_one(db)
        .await
        .unwrap()
}

async fn wait_sent(db: &sqlx::PgPool, target: i64) {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let failed: i64 =
            sqlx::query_scalar("select count(*) from notifications where state = 'failed'")
                .fetch_one(db)
                .await
                .unwrap();
        assert_eq!(failed, 0, "no notification may fail");
        if sent(db).await >= target {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {target} sent",
            sent(db).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (messages/s from the first event to the last acceptance, p50 ms, p99 ms) of the
/// notifications whose events were emitted after `since`.
async fn measure(db: &sqlx::PgPool, since: time::OffsetDateTime) -> (f64, f64, f64) {
    let (rate, p50, p99): (f64, f64, f64) = sqlx::query_as(
        "select count(*) / extract(epoch from max(n.sent_at) - min(o.created_at))::float8,
                percentile_cont(0.5) within group (order by extract(epoch from n.sent_at - o.created_at)) * 1000,
                percentile_cont(0.99) within group (order by extract(epoch from n.sent_at - o.created_at)) * 1000
           from notifications n join outbox o on o.id = n.source_message_id
          where o.created_at >= $1",
    )
    .bind(since)
    .fetch_one(db)
    .await
    .unwrap();
    (rate, p50, p99)
}

/// A lead, its loan and an upload link with a recipient: what the emitted events name.
async fn loan_with_link(app: &helpers::TestApp) -> (String, String) {
    let token = helpers::oidc::access_token("agent-a1").await;
    let lead: Value = app
        .create(
            &token,
            "/v1/leads",
            &json!({"first_name": "Bench", "last_name": "Borrower", "email": "lead@example.net"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let loan: Value = app
        .create(
            &token,
            "/v1/loans",
            &json!({"lead_id": lead["id"], "loan_type": "conventional", "amount": "300000",
                "property": {"line1": "9 Elm St", "city": "Springfield", "state": "IL", "postal_code": "62704"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let loan = loan["id"].as_str().unwrap().to_owned();
    let link: Value = app
        .create(
            &token,
            &format!("/v1/loans/{loan}/upload-links"),
            &json!({"borrower_email": "bench@example.net"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let link = link["id"].as_str().unwrap().to_owned();
    (loan, link)
}

/// The service's SMTP client alone: the same rendered message, the same concurrency.
async fn raw_send_rate(app: &helpers::TestApp) -> f64 {
    let mailer = Arc::new(loanfolio::mail::Mailer::new(&app.state.settings.notifications).unwrap());
    let body = mailer
        .templates
        .render(
            "link_invitation",
            loanfolio::domain::Language::En,
            &json!({"first_name": "Bench", "agent": "Avery", "lender": "Lender",
                "support_phone": "1", "link": "http://127.0.0.1/u/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                "expires": "2026-12-31"}),
        )
        .unwrap();
    let started = Instant::now();
    futures::stream::iter(0..RAW_MESSAGES)
        .for_each_concurrent(CONCURRENCY, |_| {
            let mailer = mailer.clone();
            let body = body.clone();
            async move {
                mailer
                    .send(
                        Uuid::now_v7(),
                        "raw@example.net",
                        "Lender: please upload your documents",
                        body,
                        None,
                    )
                    .await
                    .unwrap();
            }
        })
        .await;
    RAW_MESSAGES as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let smtp = helpers::smtp::PrivateSmtp::start().await;
    let app = helpers::app()
        .workers_only(&["notifier"])
        .settings(|s| {
            smtp.configure(s);
            s.rate_limit.api_per_ip = 100_000;
            s.rate_limit.api_per_principal = 100_000;
        })
        .spawn()
        .await;
    let (loan, link) = loan_with_link(&app).await;
    wait_sent(&app.state.db, 1).await; // the link's own invitation

    let raw_rate = raw_send_rate(&app).await;

    // Burst: 10,000 events in one commit.
    let before = sent(&app.state.db).await;
    let since = time::OffsetDateTime::now_utc() - time::Duration::milliseconds(1);
    emit(&app.state.db, &loan, &link, NOTIFICATIONS).await;
    wait_sent(&app.state.db, before + NOTIFICATIONS as i64).await;
    let (burst_rate, burst_p50, burst_p99) = measure(&app.state.db, since).await;

    // Paced: one event every 1/(rate/2) s.
    let before = sent(&app.state.db).await;
    let since = time::OffsetDateTime::now_utc() - time::Duration::milliseconds(1);
    let every = Duration::from_secs_f64(2.0 / burst_rate);
    let mut tick = tokio::time::interval(every);
    for _ in 0..PACED {
        tick.tick().await;
        emit(&app.state.db, &loan, &link, 1).await;
    }
    wait_sent(&app.state.db, before + PACED as i64).await;
    let (_, paced_p50, paced_p99) = measure(&app.state.db, since).await;

    let received = smtp.messages().len();
    println!(
        "raw SMTP send rate (service's lettre client, {CONCURRENCY} concurrent, {RAW_MESSAGES} messages): {raw_rate:.0} msg/s"
    );
    println!(
        "burst: {NOTIFICATIONS} notifications (outbox → relay → RabbitMQ → notifier → SMTP): {burst_rate:.0} msg/s; event → SMTP acceptance p50 {burst_p50:.0} ms, p99 {burst_p99:.0} ms (queueing behind the burst)"
    );
    println!(
        "paced at {:.0} events/s ({PACED}): event → SMTP acceptance p50 {paced_p50:.0} ms, p99 {paced_p99:.0} ms",
        burst_rate / 2.0
    );
    println!(
        "ratio raw / notifier throughput: {:.2}; server received {received} messages (expected {})",
        raw_rate / burst_rate,
        1 + RAW_MESSAGES + NOTIFICATIONS + PACED
    );
}
