//! The idempotency layer, proven on a test router behind real authentication.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Extension;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use loanfolio::auth::Actor;
use loanfolio::error::AppJson;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;

use crate::helpers::{TestApp, app, assert_problem, oidc};

#[derive(serde::Deserialize)]
struct NewWidget {
    name: String,
    #[serde(default)]
    slow: bool,
}

/// Creates a "widget": a counter stands in for the resource's row, so tests can count
/// how many were really created.
async fn create_widget(
    Extension(counter): Extension<Arc<AtomicU64>>,
    Extension(actor): Extension<Actor>,
    AppJson(widget): AppJson<NewWidget>,
) -> axum::response::Response {
    if widget.name.is_empty() {
        return loanfolio::error::AppError::validation(vec![loanfolio::error::FieldError {
            field: "name".into(),
            message: "must not be empty".into(),
        }])
        .into_response();
    }
    if widget.slow {
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let id = counter.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/widgets/{id}"))],
        AppJson(json!({"id": id, "name": widget.name, "owner": actor.subject})),
    )
        .into_response()
}

async fn spawn() -> (TestApp, Arc<AtomicU64>) {
    let counter = Arc::new(AtomicU64::new(0));
    let shared = counter.clone();
    let app = app()
        .router(move |state| {
            let routes = OpenApiRouter::new()
                .route("/v1/widgets", post(create_widget))
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    loanfolio::http::idempotency::require,
                ));
            let (routes, _) = loanfolio::http::authenticated(&state, routes).split_for_parts();
            loanfolio::http::finish(routes.layer(Extension(shared)), state)
        })
        .spawn()
        .await;
    (app, counter)
}

async fn post_widget(
    app: &TestApp,
    token: &str,
    key: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/v1/widgets"))
        .bearer_auth(token)
        .json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_replay_returns_the_identical_response() {
    let (app, counter) = spawn().await;
    let token = oidc::access_token("agent-a1").await;
    let first = post_widget(&app, &token, Some("key-1"), json!({"name": "a"})).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers()["location"].clone();
    let first_body = first.bytes().await.unwrap();

    let again = post_widget(&app, &token, Some("key-1"), json!({"name": "a"})).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], location);
    assert_eq!(again.bytes().await.unwrap(), first_body);
    assert_eq!(counter.load(Ordering::SeqCst), 1, "created once");

    // The brief's header spelling is the same key.
    let brief = app
        .client
        .post(app.url("/v1/widgets"))
        .bearer_auth(&token)
        .header("X-Idempotency-Key", "key-1")
        .json(&json!({"name": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(brief.headers()["idempotent-replayed"], "true");
}

#[tokio::test]
async fn a_different_request_with_the_same_key_is_422() {
    let (app, counter) = spawn().await;
    let token = oidc::access_token("agent-a1").await;
    assert_eq!(
        post_widget(&app, &token, Some("k"), json!({"name": "a"}))
            .await
            .status(),
        201
    );
    let response = post_widget(&app, &token, Some("k"), json!({"name": "b"})).await;
    assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(counter.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_give_one_success_and_one_409() {
    let (app, counter) = spawn().await;
    let token = oidc::access_token("agent-a1").await;
    let body = json!({"name": "a", "slow": true});
    let (a, b) = tokio::join!(
        post_widget(&app, &token, Some("race"), body.clone()),
        post_widget(&app, &token, Some("race"), body.clone()),
    );
    let mut statuses = vec![a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, vec![201, 409]);
    let conflict = if a.status() == 409 { a } else { b };
    assert_problem(conflict, StatusCode::CONFLICT, "idempotency_key_in_flight").await;
    assert_eq!(counter.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn keys_are_scoped_per_principal() {
    let (app, counter) = spawn().await;
    let a1 = oidc::access_token("agent-a1").await;
    let a2 = oidc::access_token("agent-a2").await;
    let first: Value = post_widget(&app, &a1, Some("shared"), json!({"name": "x"}))
        .await
        .json()
        .await
        .unwrap();
    let second = post_widget(&app, &a2, Some("shared"), json!({"name": "x"})).await;
    assert_eq!(second.status(), 201);
    assert!(second.headers().get("idempotent-replayed").is_none());
    let second: Value = second.json().await.unwrap();
    assert_ne!(first["id"], second["id"]);
    assert_eq!(second["owner"], "agent-a2");
    assert_eq!(counter.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_missing_key_is_400_and_failures_are_not_stored() {
    let (app, counter) = spawn().await;
    let token = oidc::access_token("agent-a1").await;
    let response = post_widget(&app, &token, None, json!({"name": "a"})).await;
    assert_problem(
        response,
        StatusCode::BAD_REQUEST,
        "idempotency_key_required",
    )
    .await;

    // A validation failure frees the key: the corrected request with the same key works.
    let response = post_widget(&app, &token, Some("fix-me"), json!({"name": ""})).await;
    assert_eq!(response.status(), 422);
    let response = post_widget(&app, &token, Some("fix-me"), json!({"name": "fixed"})).await;
    assert_eq!(response.status(), 201);
    assert!(response.headers().get("idempotent-replayed").is_none());
    assert_eq!(counter.load(Ordering::SeqCst), 1);
}
