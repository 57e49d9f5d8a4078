//! /readyz: every dependency by name; 503 only for what the role cannot work without or a
//! schema that is not at this release's version.

use loanfolio::app::Role;

use crate::helpers::clamd::PrivateClamd;
use crate::helpers::proxy::FaultProxy;
use crate::helpers::{TestDatabase, app, eventually, spawn_app};

const DEPENDENCIES: [&str; 7] = [
    "postgres", "rabbitmq", "redis", "s3", "clamd", "oidc", "kms",
];

#[tokio::test]
async fn every_dependency_is_up_on_the_local_stack() {
    let app = spawn_app().await;
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["role"], "serve");
    for name in DEPENDENCIES {
        assert_eq!(
            body["dependencies"][name]["status"], "up",
            "{name}: {body:#}"
        );
    }
    assert_eq!(body["dependencies"]["postgres"]["required"], true);
    assert_eq!(body["dependencies"]["clamd"]["required"], false);
    assert_eq!(body["schema"]["ready"], true);
}

#[tokio::test]
async fn healthz_is_always_ok() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn a_schema_behind_keeps_the_service_not_ready_until_migrated() {
    let app = app().database(TestDatabase::empty().await).spawn().await;
    let (status, body) = app.readyz().await;
    assert_eq!(status, 503, "{body:#}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["schema"]["ready"], false);
    let detail = body["schema"]["detail"].as_str().unwrap();
    assert!(detail.contains("run `loanfolio migrate`"), "{detail}");
    // PostgreSQL itself is reachable: the schema is the reason.
    assert_eq!(body["dependencies"]["postgres"]["status"], "up");
    // serve never migrates by itself.
    let (status, _) = app.readyz().await;
    assert_eq!(status, 503);

    // Once `loanfolio migrate` has run (the same code path), it becomes ready without a restart.
    loanfolio::db::migrate(&app.state.db).await.unwrap();
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "{body:#}");
}

#[tokio::test]
async fn clamd_down_degrades_but_keeps_serving_and_recovers_without_restart() {
    let mut clamd = PrivateClamd::start().await;
    let address = clamd.address();
    let app = app().settings(|s| s.clamd.address = address).spawn().await;
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["dependencies"]["clamd"]["status"], "up");

    clamd.stop().await;
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "clamd is not required to serve: {body:#}");
    assert_eq!(body["dependencies"]["clamd"]["status"], "down", "{body:#}");
    assert!(body["dependencies"]["clamd"]["detail"].is_string());

    clamd.restart().await;
    let recovered = eventually(20, || async {
        let (_, body) = app.readyz().await;
        body["dependencies"]["clamd"]["status"] == "up"
    })
    .await;
    assert!(recovered, "clamd reported up again after its restart");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"loanfolio_dependency_up{dependency="clamd"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_worker_needs_rabbitmq_and_serve_does_not() {
    let proxy = FaultProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let amqp = format!("amqp://guest:guest@{}/%2f", proxy.address);
    let worker = app()
        .role(Role::Worker)
        .settings({
            let amqp = amqp.clone();
            move |s| s.set_rabbitmq_url(amqp)
        })
        .spawn()
        .await;
    let serve = app()
        .settings(move |s| s.set_rabbitmq_url(amqp))
        .spawn()
        .await;
    let (status, body) = worker.readyz().await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["role"], "worker");

    proxy.cut().await;
    let (status, body) = worker.readyz().await;
    assert_eq!(status, 503, "{body:#}");
    assert_eq!(body["dependencies"]["rabbitmq"]["status"], "down");
    let (status, body) = serve.readyz().await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["dependencies"]["rabbitmq"]["status"], "down");

    proxy.restore();
    let (status, body) = worker.readyz().await;
    assert_eq!(status, 200, "reconnects by itself: {body:#}");
}
