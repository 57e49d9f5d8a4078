//! Failure injection through a fault proxy in front of the shared PostgreSQL, and graceful
//! shutdown.

use std::time::Duration;

use crate::helpers::proxy::FaultProxy;
use crate::helpers::{app, eventually, test_routes};

#[tokio::test]
async fn postgres_unreachable_makes_readyz_503_but_healthz_200() {
    let proxy = FaultProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let app = app().database_via(proxy.address).spawn().await;
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "{body:#}");

    proxy.cut().await;
    let (status, body) = app.readyz().await;
    assert_eq!(status, 503, "{body:#}");
    assert_eq!(
        body["dependencies"]["postgres"]["status"], "down",
        "{body:#}"
    );
    // Other dependencies are still checked and reported.
    assert_eq!(body["dependencies"]["redis"]["status"], "up", "{body:#}");
    assert_eq!(app.get("/healthz").await.status(), 200);

    proxy.restore();
    let recovered = eventually(20, || async { app.readyz().await.0 == 200 }).await;
    assert!(recovered, "ready again once PostgreSQL is reachable");
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut app = app().router(test_routes::router).spawn().await;
    let client = app.client.clone();
    let url = app.url("/test/slow");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    app.stop().await.expect("clean shutdown");
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "finished");
    // And nothing new is accepted.
    assert!(app.client.get(app.url("/healthz")).send().await.is_err());
}
