//! `GET /v1/me` with a bearer token next to `GET /healthz`, measured in the same run against
//! the real local stack: what the authentication layer (token verification, MFA and role
//! checks, two Redis rate-limit counters, the cached JIT agent check) adds per request.
//!
//! Run with `scripts/bench auth` (provisions the stack, builds in release mode).

#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../tests/api/helpers/mod.rs"]
mod helpers;

use std::time::{Duration, Instant};

use futures::future::join_all;

const WARMUP: usize = 300;
const SAMPLES: usize = 3000;
const CONCURRENCY: usize = 8;
const THROUGHPUT_REQUESTS: usize = 6000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// Sequential latencies (one connection, keep-alive) of alternating requests to both paths,
/// so drift and noise hit both equally.
async fn latencies(
    client: &reqwest::Client,
    health: &str,
    me: &str,
    token: &str,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut h = Vec::with_capacity(SAMPLES);
    let mut m = Vec::with_capacity(SAMPLES);
    for i in 0..(WARMUP + SAMPLES) {
        let started = Instant::now();
        let status = client.get(health).send().await.unwrap().status();
        let health_took = started.elapsed();
        assert_eq!(status, 200);
        let started = Instant::now();
        let response = client.get(me).bearer_auth(token).send().await.unwrap();
        let status = response.status();
        let _ = response.bytes().await.unwrap();
        let me_took = started.elapsed();
        assert_eq!(status, 200);
        if i >= WARMUP {
            h.push(health_took);
            m.push(me_took);
        }
    }
    h.sort();
    m.sort();
    (h, m)
}

async fn throughput(client: &reqwest::Client, url: &str, token: Option<&str>) -> f64 {
    let started = Instant::now();
    let per_worker = THROUGHPUT_REQUESTS / CONCURRENCY;
    join_all((0..CONCURRENCY).map(|_| async move {
        for _ in 0..per_worker {
            let mut request = client.get(url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            let _ = response.bytes().await.unwrap();
        }
    }))
    .await;
    (per_worker * CONCURRENCY) as f64 / started.elapsed().as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = helpers::app()
            .settings(|s| {
                // Measure the layer's work, not its refusals.
                s.rate_limit.api_per_ip = 1_000_000;
                s.rate_limit.api_per_principal = 1_000_000;
                s.log.level = "warn".into();
            })
            .spawn()
            .await;
        let token = helpers::oidc::access_token("agent-a1").await;
        let client = reqwest::Client::new();
        let health = app.url("/healthz");
        let me = app.url("/v1/me");

        let (h, m) = latencies(&client, &health, &me, &token).await;
        let health_rps = throughput(&client, &health, None).await;
        let me_rps = throughput(&client, &me, Some(&token)).await;

        println!("GET /v1/me (bearer) vs GET /healthz — same process, same run, release build");
        println!("sequential latency over {SAMPLES} requests each (one keep-alive connection):");
        println!(
            "  /healthz  p50 {:.3} ms  p99 {:.3} ms",
            ms(percentile(&h, 0.50)),
            ms(percentile(&h, 0.99))
        );
        println!(
            "  /v1/me    p50 {:.3} ms  p99 {:.3} ms",
            ms(percentile(&m, 0.50)),
            ms(percentile(&m, 0.99))
        );
        println!(
            "  auth layer adds  p50 {:.3} ms  p99 {:.3} ms  (ratio p50 {:.2}x)",
            ms(percentile(&m, 0.50)) - ms(percentile(&h, 0.50)),
            ms(percentile(&m, 0.99)) - ms(percentile(&h, 0.99)),
            ms(percentile(&m, 0.50)) / ms(percentile(&h, 0.50)),
        );
        println!("throughput, {CONCURRENCY} concurrent clients, {THROUGHPUT_REQUESTS} requests:");
        println!("  /healthz  {health_rps:.0} req/s");
        println!(
            "  /v1/me    {me_rps:.0} req/s  (ratio {:.2})",
            me_rps / health_rps
        );
    });
}
