//! Test-only routes mounted behind the service's real edge middleware (`http::finish`),
//! for behaviour no production route exercises yet: a JSON body, a path parameter, a slow
//! handler, a panic.

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use loanfolio::error::AppJson;
use loanfolio::state::AppState;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Widget {
    pub name: String,
    pub count: u32,
}

async fn create_widget(AppJson(widget): AppJson<Widget>) -> AppJson<Widget> {
    AppJson(widget)
}

async fn get_thing(Path(id): Path<String>) -> String {
    id
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    "finished"
}

async fn boom() -> &'static str {
    panic!("a handler bug")
}

pub fn router(state: AppState) -> axum::Router {
    let (ops, _) = loanfolio::http::ops::public_routes().split_for_parts();
    let routes: Router<AppState> = Router::new()
        .route("/test/widgets", post(create_widget))
        .route("/test/things/{id}", get(get_thing))
        .route("/test/slow", get(slow))
        .route("/test/panic", get(boom))
        .merge(ops);
    loanfolio::http::finish(routes, state)
}
