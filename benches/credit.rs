//! Credit pulls at scale (issue 6's number), against the bureau simulator at 50 ms latency
//! and 10 % transient errors: 1,000 requests all complete; throughput and end-to-end p99
//! next to the floor the simulator imposes (requests × latency ÷ concurrency), and the ratio.
//!
//! `scripts/bench credit` (release build).

#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../tests/api/helpers/mod.rs"]
mod helpers;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

const REQUESTS: usize = 1000;
const LATENCY_MS: u64 = 50;
const ERROR_RATE: f64 = 0.10;
/// The credit worker's prefetch: messages in flight at once.
const CONCURRENCY: u64 = 8;

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

/// When each pull was seen completed (polling every 10 ms; a failed pull fails the run).
async fn completions(db: &sqlx::PgPool) -> HashMap<Uuid, Instant> {
    let mut done: HashMap<Uuid, Instant> = HashMap::with_capacity(REQUESTS);
    let deadline = Instant::now() + Duration::from_secs(600);
    while done.len() < REQUESTS {
        assert!(
            Instant::now() < deadline,
            "only {} of {REQUESTS} completed",
            done.len()
        );
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "select id, status from credit_reports where status in ('completed', 'failed')",
        )
        .fetch_all(db)
        .await
        .unwrap();
        let now = Instant::now();
        for (id, status) in rows {
            assert_eq!(status, "completed", "pull {id} failed");
            done.entry(id).or_insert(now);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done
}

#[tokio::main]
async fn main() {
    let bureau = helpers::bureau::PrivateBureau::start().await;
    let app = helpers::app()
        .workers_only(&["credit-worker"])
        .settings(|s| {
            bureau.configure(s);
            s.rate_limit.api_per_ip = 100_000;
            s.rate_limit.api_per_principal = 100_000;
        })
        .spawn()
        .await;
    bureau
        .control(json!({"latency_ms": LATENCY_MS, "error_rate": ERROR_RATE, "error_status": 503}))
        .await;
    let token = helpers::oidc::access_token("agent-a1").await;
    let lead: Value = app
        .create(
            &token,
            "/v1/leads",
            &json!({"first_name": "Bench", "last_name": "Borrower", "ssn": "219-09-9999",
                    "date_of_birth": "1971-03-14",
                    "address": {"line1": "1 Main St", "city": "Springfield", "state": "IL", "postal_code": "62701"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let lead = lead["id"].as_str().unwrap().to_owned();
    let consent = json!({"obtained_at": "2026-11-01T10:00:00Z", "method": "written", "text_version": "fcra-2026-01"});

    let start = Instant::now();
    let mut asked: HashMap<Uuid, Instant> = HashMap::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let at = Instant::now();
        let response = app
            .create(
                &token,
                &format!("/v1/leads/{lead}/credit-reports"),
                &json!({"pull_type": "soft", "consent": consent}),
            )
            .await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        asked.insert(body["id"].as_str().unwrap().parse().unwrap(), at);
    }
    let queued_in = start.elapsed();

    let done = completions(&app.state.db).await;
    let elapsed = done.values().max().unwrap().duration_since(start);
    let mut latencies: Vec<Duration> = asked
        .iter()
        .map(|(id, at)| done[id].duration_since(*at))
        .collect();
    let p50 = percentile(&mut latencies, 0.50);
    let p99 = percentile(&mut latencies, 0.99);
    let bureau_calls = bureau.requests().await;
    let floor = Duration::from_millis(REQUESTS as u64 * LATENCY_MS / CONCURRENCY);
    println!(
        "{REQUESTS} credit pulls, simulator at {LATENCY_MS} ms and {:.0} % transient errors: all completed ({bureau_calls} bureau calls, retries included)",
        ERROR_RATE * 100.0
    );
    println!(
        "requests accepted in {:.1} s; all completed in {:.1} s = {:.1} pulls/s; end to end p50 {p50:.0} ms, p99 {p99:.0} ms",
        queued_in.as_secs_f64(),
        elapsed.as_secs_f64(),
        REQUESTS as f64 / elapsed.as_secs_f64()
    );
    println!(
        "floor (requests × latency ÷ concurrency = {REQUESTS} × {LATENCY_MS} ms ÷ {CONCURRENCY}): {:.2} s; ratio {:.2}",
        floor.as_secs_f64(),
        elapsed.as_secs_f64() / floor.as_secs_f64()
    );
}
