//! /metrics and /openapi.json.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{app, test_routes};

/// The value of the sample `name` (with its labels, exactly) in a Prometheus text page.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l[name.len()..].trim().parse().ok())
}

#[tokio::test]
async fn metrics_show_the_outbox_backlog_and_dead_letters_for_the_alert_rules() {
    use lapin::options::BasicPublishOptions;
    // The notifier's queues exist once its consumer runs; the backlog is the other test's.
    let app = app().workers_only(&["notifier"]).spawn().await;
    let prefix = app.state.settings.rabbitmq.prefix.clone();
    let text = app.admin_get("/metrics").await.text().await.unwrap();
    assert_eq!(
        sample(&text, "loanfolio_outbox_unpublished"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "loanfolio_outbox_oldest_unpublished_seconds"),
        Some(0.0)
    );

    // A dead letter in the notifier's DLQ, once the consumer has declared it.
    crate::helpers::eventually!(
        20,
        || async {
            loanfolio::queue::dlq::depth(&app.state.broker, &prefix, "notifier")
                .await
                .is_ok()
        },
        "the notifier never declared its dead-letter queue"
    );
    let channel = app.state.broker.channel().await.unwrap();
    channel
        .basic_publish(
            "".into(),
            format!("{prefix}.notifier.dlq").as_str().into(),
            BasicPublishOptions::default(),
            b"{}",
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // Each scrape reads every DLQ's depth within the readiness budget; on a loaded machine
    // a scrape can miss one, so give it a few.
    let seen = crate::helpers::eventually(30, || async {
        let text = app.admin_get("/metrics").await.text().await.unwrap();
        sample(&text, r#"loanfolio_dlq_messages{consumer="notifier"}"#) == Some(1.0)
    })
    .await;
    assert!(seen, "the dead letter is counted");
    let text = app.admin_get("/metrics").await.text().await.unwrap();
    assert_eq!(
        sample(&text, r#"loanfolio_circuit_state{integration="los"}"#),
        Some(0.0),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_show_an_outbox_that_cannot_publish() {
    // No workers: nothing publishes, so an event written a minute ago is a backlog.
    let app = app().spawn().await;
    sqlx::query(
        "insert into outbox (id, topic, payload, created_at) values ($1, 'test.event', '{}', now() - interval '90 seconds')",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(&app.state.db)
    .await
    .unwrap();
    let text = app.admin_get("/metrics").await.text().await.unwrap();
    assert_eq!(
        sample(&text, "loanfolio_outbox_unpublished"),
        Some(1.0),
        "{text}"
    );
    let age = sample(&text, "loanfolio_outbox_oldest_unpublished_seconds").unwrap();
    assert!((90.0..120.0).contains(&age), "{age}");
}

#[tokio::test]
async fn metrics_histogram_uses_route_templates() {
    let app = app().router(test_routes::router).spawn().await;
    for id in ["0190aaaa-1111", "0190bbbb-2222", "secret-token-xyz"] {
        assert_eq!(app.get(&format!("/test/things/{id}")).await.status(), 200);
    }
    app.get("/no/such/route/with-an-id-123").await;

    let text = app.admin_get("/metrics").await.text().await.unwrap();
    let bucket = text
        .lines()
        .find(|l| {
            l.starts_with("loanfolio_http_request_duration_seconds_bucket")
                && l.contains(r#"route="/test/things/{id}""#)
                && l.contains(r#"le="+Inf""#)
        })
        .unwrap_or_else(|| panic!("no histogram for the route template:\n{text}"));
    assert!(bucket.contains(r#"status="200""#), "{bucket}");
    assert!(
        bucket.trim_end().ends_with(" 3"),
        "three requests counted: {bucket}"
    );
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    for raw in ["0190aaaa", "secret-token-xyz", "with-an-id-123"] {
        assert!(!text.contains(raw), "raw path leaked into metrics: {raw}");
    }
}

#[tokio::test]
async fn openapi_document_is_valid_openapi_3_1() {
    let app = app().spawn().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert!(doc["paths"][path]["get"].is_object(), "{path} undocumented");
    }
    assert!(
        doc["paths"]["/metrics"].is_null(),
        "/metrics is on the operations listener only"
    );

    // A real validator, not our own reading of the spec.
    let validator = std::env::var("LOANFOLIO_TEST_OPENAPI_VALIDATOR").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/loanfolio-tools/venv/bin/openapi-spec-validator")
    });
    assert!(
        std::path::Path::new(&validator).is_file(),
        "openapi-spec-validator not found at {validator}: scripts/test installs it"
    );
    let file = tempfile::NamedTempFile::with_suffix(".json").unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&doc).unwrap()).unwrap();
    let output = Command::new(&validator)
        .arg("--schema")
        .arg("3.1.0")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "validator refused the document:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // And the validator does refuse a broken document (so the check above can fail).
    let mut broken = doc.clone();
    broken["paths"]["/healthz"]["get"]["responses"] = serde_json::json!("nope");
    std::fs::write(file.path(), serde_json::to_vec(&broken).unwrap()).unwrap();
    let output = Command::new(&validator)
        .arg("--schema")
        .arg("3.1.0")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "validator accepted a broken document"
    );
}
