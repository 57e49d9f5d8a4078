//! /readyz: every dependency by name; 503 only for what the role cannot work without or a
//! schema that is not at this release's version.

use loanfolio::state::Role;

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
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
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

/// Defect: every anonymous `/readyz` fanned out to Vault, the provider, S3, clamd, RabbitMQ
/// and Redis and reported internal addresses in `detail`; `/metrics` was public.
#[tokio::test]
async fn the_public_listener_shows_names_and_states_only_and_no_metrics() {
    let app = app().spawn().await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 404, "no metrics on the public listener");
    let (status, admin) = app.readyz().await;
    assert_eq!(status, 200);
    assert_eq!(app.admin_get("/metrics").await.status(), 200);
    assert!(admin["integrations"].is_object(), "{admin:#}");

    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let public: serde_json::Value = response.json().await.unwrap();
    let keys: Vec<&str> = public
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["dependencies", "role", "schema", "status"],
        "{public:#}"
    );
    assert_eq!(public["schema"], serde_json::json!({"ready": true}));
    for name in DEPENDENCIES {
        assert_eq!(
            public["dependencies"][name],
            serde_json::json!({"status": "up"}),
            "{name}: {public:#}"
        );
    }
    // A dependency that is down: the public report says so, without the reason.
    let nothing_there = format!("127.0.0.1:{}", crate::helpers::free_port());
    let app = crate::helpers::app()
        .settings(|s| s.clamd.address = nothing_there)
        .spawn()
        .await;
    let public: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(
        public["dependencies"]["clamd"],
        serde_json::json!({"status": "down"})
    );
    let (_, admin) = app.readyz().await;
    assert!(
        admin["dependencies"]["clamd"]["detail"].is_string(),
        "{admin:#}"
    );
    assert!(!public.to_string().contains("127.0.0.1"), "{public}");
}

#[tokio::test]
async fn readiness_is_cached_single_flight_and_rate_limited_per_client() {
    let app = app()
        .settings(|s| {
            s.readiness.cache_ms = 60_000;
            s.readiness.public_per_ip = 20;
        })
        .spawn()
        .await;
    let checks = || async {
        let text = app.admin_get("/metrics").await.text().await.unwrap();
        text.lines()
            .find(|l| l.starts_with("loanfolio_readiness_checks_total"))
            .and_then(|l| l.rsplit(' ').next())
            .map(|n| n.parse::<u64>().unwrap())
            .unwrap_or(0)
    };
    assert_eq!(checks().await, 0);
    // 15 public and 5 detailed probes at once: one check of the dependencies.
    let public = (0..15).map(|_| app.client.get(app.url("/readyz")).send());
    let admin = (0..5).map(|_| app.client.get(app.admin_url("/readyz")).send());
    let answers = futures::future::join_all(public.chain(admin)).await;
    assert!(answers.into_iter().all(|r| r.unwrap().status() == 200));
    assert_eq!(checks().await, 1, "answered from one check");

    // Over 20 a second from one address: 429 with Retry-After.
    let answers =
        futures::future::join_all((0..40).map(|_| app.client.get(app.url("/readyz")).send())).await;
    let statuses: Vec<u16> = answers
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert_eq!(checks().await, 1);

    // The load balancer (a trusted proxy) is never limited.
    let app = crate::helpers::app()
        .settings(|s| {
            s.readiness.public_per_ip = 1;
            s.rate_limit.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        })
        .spawn()
        .await;
    let answers =
        futures::future::join_all((0..20).map(|_| app.client.get(app.url("/readyz")).send())).await;
    assert!(answers.into_iter().all(|r| r.unwrap().status() == 200));
    // A client behind that proxy is limited by its own address (review finding: every
    // client through nginx was exempt).
    let answers = futures::future::join_all((0..20).map(|_| {
        app.client
            .get(app.url("/readyz"))
            .header("X-Forwarded-For", "203.0.113.7")
            .send()
    }))
    .await;
    let statuses: Vec<u16> = answers
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
}
