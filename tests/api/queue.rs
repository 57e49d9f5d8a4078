//! The outbox, the relay and the consumer framework against the real RabbitMQ, with a
//! consumer defined here: events arrive once, survive a broker outage, retry, and land in
//! the DLQ (and come back out of it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicNackOptions, BasicPublishOptions};
use loanfolio::queue::consumer::{self, Handler, HandlerError, Message};
use serde_json::{Value, json};
use sqlx::PgConnection;

use crate::helpers::proxy::FaultProxy;
use crate::helpers::{TestApp, app, eventually};

/// Records what it processed; fails as each message's payload asks.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Message>>,
    transient_failures: Mutex<HashMap<uuid::Uuid, u32>>,
    poison_cured: Mutex<bool>,
}

struct TestConsumer(Arc<Recorder>, Vec<String>);

impl Handler for TestConsumer {
    fn name(&self) -> &str {
        "test-consumer"
    }
    fn topics(&self) -> Vec<String> {
        self.1.clone()
    }
    fn handle<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if message.payload["fail_transiently_once"] == true {
                let mut failures = self.0.transient_failures.lock().unwrap();
                let count = failures.entry(message.id).or_default();
                *count += 1;
                if *count == 1 {
                    return Err(HandlerError::Transient(anyhow::anyhow!("dependency down")));
                }
            }
            if message.payload["poison"] == true && !*self.0.poison_cured.lock().unwrap() {
                return Err(HandlerError::Permanent(anyhow::anyhow!(
                    "cannot process this kind"
                )));
            }
            self.0.seen.lock().unwrap().push(message.clone());
            Ok(())
        })
    }
}

fn start_consumer(app: &TestApp, topics: &[&str]) -> (Arc<Recorder>, tokio::task::JoinHandle<()>) {
    let recorder = Arc::new(Recorder::default());
    let handler = Arc::new(TestConsumer(
        recorder.clone(),
        topics.iter().map(|t| t.to_string()).collect(),
    ));
    let task = tokio::spawn(consumer::run(app.state.clone(), handler, 20));
    (recorder, task)
}

/// An outbox row with any topic and payload, as `outbox::enqueue` writes it for an event:
/// the framework under test must carry what it is given, events or not.
async fn enqueue(app: &TestApp, topic: &str, payload: Value) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    sqlx::query("insert into outbox (id, topic, payload, headers) values ($1, $2, $3, $4)")
        .bind(id)
        .bind(topic)
        .bind(payload)
        .bind(json!({ "request_id": "req-1", "version": 1 }))
        .execute(&app.state.db)
        .await
        .unwrap();
    id
}

async fn seen_count(recorder: &Recorder) -> usize {
    recorder.seen.lock().unwrap().len()
}

#[tokio::test]
async fn outbox_redrive_publishes_the_window_again_and_consumers_skip_what_they_handled() {
    use secrecy::ExposeSecret;
    let app = app().workers_only(&[]).spawn().await;
    let (recorder, _task) = start_consumer(&app, &["loan.status.changed"]);
    eventually!(
        10,
        || async {
            loanfolio::queue::dlq::list(
                &app.state.broker,
                &app.state.settings.rabbitmq.prefix,
                "test-consumer",
            )
            .await
            .is_ok()
        },
        "the test consumer never declared its queues"
    );
    let id = enqueue(&app, "loan.status.changed", json!({"loanId": "l-1"})).await;
    eventually!(
        10,
        || async { seen_count(&recorder).await == 1 },
        "the test consumer did not see exactly one message"
    );
    let published = || async {
        sqlx::query_scalar::<_, Option<time::OffsetDateTime>>(
            "select published_at from outbox where id = $1",
        )
        .bind(id)
        .fetch_one(&app.state.db)
        .await
        .unwrap()
    };
    eventually!(
        5,
        || async { published().await.is_some() },
        "the event was never published"
    );
    let first = published().await.unwrap();

    // As after a restore: the operator publishes the last hour again.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_loanfolio"))
        .arg("--config")
        .arg(crate::helpers::stack_config_path())
        .args(["admin", "outbox-redrive", "--minutes", "60"])
        .env(
            "LOANFOLIO__DATABASE__URL",
            app.state.settings.database.url().unwrap().expose_secret(),
        )
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{out}");
    assert!(out.starts_with("1 event(s)"), "{out}");
    // The relay sends it again…
    assert!(
        eventually(10, || async {
            published().await.is_some_and(|at| at > first)
        })
        .await,
        "published again"
    );
    // …and the consumer, which handled it already, does not handle it twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        seen_count(&recorder).await,
        1,
        "exactly once, redrive or not"
    );
}

#[tokio::test]
async fn events_are_relayed_and_consumed_once() {
    let app = app().workers_only(&[]).spawn().await;
    let (recorder, _task) = start_consumer(&app, &["loan.status.changed"]);
    // Let the consumer declare its queue before the event is published.
    eventually!(
        10,
        || async {
            loanfolio::queue::dlq::list(
                &app.state.broker,
                &app.state.settings.rabbitmq.prefix,
                "test-consumer",
            )
            .await
            .is_ok()
        },
        "the test consumer never declared its queues"
    );
    let id = enqueue(
        &app,
        "loan.status.changed",
        json!({"loanId": "l-1", "oldStatus": "draft", "newStatus": "submitted"}),
    )
    .await;
    enqueue(&app, "lead.created", json!({"leadId": "x"})).await; // not subscribed
    eventually!(
        10,
        || async { seen_count(&recorder).await == 1 },
        "the test consumer did not see exactly one message"
    );
    let message = recorder.seen.lock().unwrap()[0].clone();
    assert_eq!(message.id, id);
    assert_eq!(message.topic, "loan.status.changed");
    assert_eq!(message.payload["newStatus"], "submitted");
    assert_eq!(message.request_id.as_deref(), Some("req-1"));
    // The relay marks rows published when its transaction commits, which can be just after
    // the consumer already has the message.
    let all_marked = eventually(5, || async {
        let unpublished: i64 =
            sqlx::query_scalar("select count(*) from outbox where published_at is null")
                .fetch_one(&app.state.db)
                .await
                .unwrap();
        unpublished == 0
    })
    .await;
    assert!(all_marked, "every outbox row is marked published");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen_count(&recorder).await, 1, "exactly once");
}

#[tokio::test]
async fn five_hundred_events_survive_a_broker_outage() {
    let proxy = FaultProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let amqp = format!("amqp://guest:guest@{}/%2f", proxy.address);
    let app = app()
        .workers_only(&[])
        .settings(move |s| s.set_rabbitmq_url(amqp))
        .spawn()
        .await;
    let (recorder, _task) = start_consumer(&app, &["loan.status.changed"]);
    eventually!(
        10,
        || async {
            loanfolio::queue::dlq::list(
                &app.state.broker,
                &app.state.settings.rabbitmq.prefix,
                "test-consumer",
            )
            .await
            .is_ok()
        },
        "the test consumer never declared its queues"
    );

    proxy.cut().await;
    for i in 0..500 {
        enqueue(
            &app,
            "loan.status.changed",
            json!({"loanId": i, "oldStatus": "draft", "newStatus": "submitted"}),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pending: i64 = sqlx::query_scalar("select count(*) from outbox where published_at is null")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(
        pending, 500,
        "held in the outbox while the broker is unreachable"
    );

    proxy.restore();
    let all = eventually(60, || async { seen_count(&recorder).await >= 500 }).await;
    let seen = recorder.seen.lock().unwrap().clone();
    let unique: std::collections::HashSet<_> = seen.iter().map(|m| m.id).collect();
    assert!(all, "only {} of 500 arrived", unique.len());
    assert_eq!(unique.len(), 500, "none lost");
    let inbox: i64 =
        sqlx::query_scalar("select count(*) from inbox where consumer = 'test-consumer'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(inbox, 500);
    let duplicates = app
        .logs
        .text()
        .matches("duplicate delivery absorbed")
        .count();
    println!(
        "broker outage: 500 events, 500 processed, {duplicates} duplicate deliveries absorbed by the inbox"
    );
    assert_eq!(seen.len(), 500, "a duplicate delivery was processed twice");
}

#[tokio::test]
async fn transient_failures_retry_and_permanent_ones_go_to_the_dlq_and_replay() {
    let app = app().workers_only(&[]).spawn().await;
    let (recorder, _task) = start_consumer(&app, &["test.event"]);
    let prefix = app.state.settings.rabbitmq.prefix.clone();
    eventually!(
        10,
        || async {
            loanfolio::queue::dlq::list(&app.state.broker, &prefix, "test-consumer")
                .await
                .is_ok()
        },
        "the test consumer never declared its queues"
    );

    let retried = enqueue(&app, "test.event", json!({"fail_transiently_once": true})).await;
    assert!(
        eventually(15, || async { seen_count(&recorder).await == 1 }).await,
        "retried after the 1 s tier"
    );
    assert_eq!(recorder.seen.lock().unwrap()[0].id, retried);
    assert_eq!(recorder.seen.lock().unwrap()[0].attempt, 1);

    let poison = enqueue(&app, "test.event", json!({"poison": true})).await;
    // Listing peeks (get + requeue), so a message is briefly absent while another listing
    // holds it: keep the listing that saw it.
    let mut letters = Vec::new();
    for _ in 0..100 {
        letters = loanfolio::queue::dlq::list(&app.state.broker, &prefix, "test-consumer")
            .await
            .unwrap();
        if letters.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(letters.len(), 1, "the permanent failure is dead-lettered");
    assert_eq!(
        letters[0].message_id.as_deref(),
        Some(poison.to_string().as_str())
    );
    assert!(
        letters[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("cannot process"),
        "{letters:?}"
    );
    assert_eq!(seen_count(&recorder).await, 1);

    // Fixed; re-drive it.
    *recorder.poison_cured.lock().unwrap() = true;
    let moved = loanfolio::queue::dlq::replay(&app.state.broker, &prefix, "test-consumer")
        .await
        .unwrap();
    assert_eq!(moved, 1);
    eventually!(
        10,
        || async { seen_count(&recorder).await == 2 },
        "the test consumer did not see exactly two messages"
    );
    assert_eq!(recorder.seen.lock().unwrap()[1].id, poison);
    assert!(
        loanfolio::queue::dlq::list(&app.state.broker, &prefix, "test-consumer")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_broker_dead_letters_a_poison_message_after_the_delivery_limit() {
    let app = app().spawn().await;
    let names = loanfolio::queue::topology::Names {
        prefix: app.state.settings.rabbitmq.prefix.clone(),
    };
    let channel = app.state.broker.channel().await.unwrap();
    loanfolio::queue::topology::declare_consumer(&channel, &names, "crashy", &["crash.event"])
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            names.queue("crashy").as_str().into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default().with_message_id("poison-1".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // A consumer that dies on it every time: each delivery is returned unacknowledged.
    let mut deliveries = 0;
    for _ in 0..100 {
        match channel
            .basic_get(
                names.queue("crashy").as_str().into(),
                BasicGetOptions::default(),
            )
            .await
            .unwrap()
        {
            Some(message) => {
                deliveries += 1;
                channel
                    .basic_nack(
                        message.delivery.delivery_tag,
                        BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
            }
            // A requeued message can take a moment to be back; once dead-lettered it never is.
            None => {
                let dead = loanfolio::queue::dlq::list(&app.state.broker, &names.prefix, "crashy")
                    .await
                    .unwrap();
                if !dead.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let delivery_limit = loanfolio::queue::topology::DELIVERY_LIMIT;
    assert!(deliveries <= delivery_limit + 1, "{deliveries} deliveries");
    let in_dlq = eventually(10, || async {
        loanfolio::queue::dlq::list(&app.state.broker, &names.prefix, "crashy")
            .await
            .unwrap()
            .len()
            == 1
    })
    .await;
    assert!(in_dlq, "dead-lettered after {deliveries} deliveries");
}

#[tokio::test]
async fn a_loan_transition_arrives_as_one_message_on_a_real_queue() {
    let app = app().workers_only(&[]).spawn().await;
    let (recorder, _task) = start_consumer(&app, &["loan.status.changed", "lead.created"]);
    let prefix = app.state.settings.rabbitmq.prefix.clone();
    eventually!(
        10,
        || async {
            loanfolio::queue::dlq::list(&app.state.broker, &prefix, "test-consumer")
                .await
                .is_ok()
        },
        "the test consumer never declared its queues"
    );

    let agent = crate::helpers::flows::Client::new(&app, "agent-a1").await;
    let lead: Value = agent
        .create(crate::helpers::flows::full_lead())
        .await
        .json()
        .await
        .unwrap();
    let token = crate::helpers::oidc::access_token("agent-a1").await;
    let loan: Value = app
        .client
        .post(app.url("/v1/loans"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "loan-1")
        .json(&json!({"lead_id": lead["id"], "loan_type": "fha", "amount": 300000,
                      "property": {"line1": "1 A St", "city": "Peoria", "state": "IL", "postal_code": "61602"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = app
        .client
        .post(app.url(&format!(
            "/v1/loans/{}/status",
            loan["id"].as_str().unwrap()
        )))
        .bearer_auth(&token)
        .header("If-Match", "\"1\"")
        .json(&json!({"status": "submitted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    eventually!(
        10,
        || async { seen_count(&recorder).await == 2 },
        "the test consumer did not see exactly two messages"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let changed: Vec<_> = seen
        .iter()
        .filter(|m| m.topic == "loan.status.changed")
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(
        changed[0].payload,
        json!({"loanId": loan["id"], "oldStatus": "draft", "newStatus": "submitted"})
    );
    let created: Vec<_> = seen.iter().filter(|m| m.topic == "lead.created").collect();
    assert_eq!(created[0].payload, json!({"leadId": lead["id"]}));
    // Messages carry ids and states only.
    for m in &seen {
        let text = m.payload.to_string();
        // The canaries whole: a short fragment such as "219" also occurs inside random ids.
        for canary in [
            crate::helpers::flows::SSN,
            crate::helpers::flows::SSN_DIGITS,
            crate::helpers::flows::DOB,
            crate::helpers::flows::INCOME,
            crate::helpers::flows::EMAIL,
            "Canary",
        ] {
            assert!(!text.contains(canary), "{text}");
        }
    }
}
