//! What a forged LOS webhook costs the service: 2,000 `v1` values and a 1 MiB body, the
//! request that cost seconds of a core before the signature header was judged first. The
//! router is driven in process (tower `oneshot`), so the figure is service time — no
//! loopback transfer of the megabyte. Baselines measured in the same run: one HMAC-SHA256
//! over the 1 MiB body (what verifying a real signature of that size costs) and the old
//! algorithm (one HMAC over the body per `v1` value per secret).
//!
//! Run with `scripts/bench webhook`.

#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../tests/api/helpers/mod.rs"]
mod helpers;

use std::time::{Duration, Instant};

use axum::body::Body;
use tower::ServiceExt;

const SAMPLES: usize = 2000;
const FORGED_VALUES: usize = 2000;
const BODY_BYTES: usize = 1 << 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The median time of one HMAC-SHA256 over `body` (50 samples).
fn one_hmac_p50(body: &[u8]) -> Duration {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"current-secret");
    let mut one = Vec::with_capacity(50);
    for _ in 0..50 {
        let started = Instant::now();
        std::hint::black_box(ring::hmac::sign(&key, body));
        one.push(started.elapsed());
    }
    one.sort();
    percentile(&one, 0.5)
}

/// In-process service times of `samples` requests, each refused 401, sorted; `warm_up`
/// more are sent first and not counted.
async fn service_times(
    router: &axum::Router,
    samples: usize,
    warm_up: usize,
    request: impl Fn() -> axum::http::Request<Body>,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(samples);
    for i in 0..(samples + warm_up) {
        let request = request();
        let started = Instant::now();
        let response = router.clone().oneshot(request).await.unwrap();
        let took = started.elapsed();
        assert_eq!(response.status(), 401);
        if i >= warm_up {
            times.push(took);
        }
    }
    times.sort();
    times
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut settings = helpers::base_settings();
        settings.log.level = "warn".into();
        settings.los.set_webhook_secrets(&["current-secret", "previous-secret"]);
        let state =
            loanfolio::state::AppState::new(settings, loanfolio::state::Role::Serve).unwrap();
        let router = loanfolio::app::router(state.clone());
        let body = vec![b'{'; BODY_BYTES];
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let forged = format!(
            "t={now}{}",
            format!(",v1={}", "ab".repeat(32)).repeat(FORGED_VALUES)
        );
        let request = |signature: &str, body: &[u8]| {
            axum::http::Request::post("/v1/webhooks/los")
                .header("content-type", "application/json")
                .header("content-length", body.len())
                .header("loanfolio-signature", signature)
                .body(Body::from(body.to_vec()))
                .unwrap()
        };

        let forged_times = service_times(&router, SAMPLES, 200, || request(&forged, &body)).await;

        // A well-formed header (five `v1` values) with a body at the limit: the most a
        // forgery can make the service do — one HMAC per configured secret.
        let limit = state.settings.los.webhook_body_limit_bytes;
        let at_limit = vec![b'{'; limit];
        let five = format!("t={now}{}", format!(",v1={}", "cd".repeat(32)).repeat(5));
        let five_times = service_times(&router, SAMPLES, 0, || request(&five, &at_limit)).await;
        let hmacs = state.webhook_keys.current().unwrap().hmacs_computed();

        // Baselines: one HMAC over the 1 MiB body; the old code's work for the forged
        // request (every value × every secret), measured on a few values and scaled.
        let one_hmac = one_hmac_p50(&body);
        let old_cost = one_hmac * (FORGED_VALUES as u32) * 2;

        let p50 = percentile(&forged_times, 0.50);
        let p99 = percentile(&forged_times, 0.99);
        println!("forged LOS webhook — in-process service time, release build, {SAMPLES} requests");
        println!(
            "  {FORGED_VALUES} v1 values + 1 MiB body → 401   p50 {:.1} µs  p99 {:.1} µs  (goal < 5,000 µs: {})",
            us(p50),
            us(p99),
            if p99 < Duration::from_millis(5) { "met" } else { "NOT met" }
        );
        println!(
            "  5 v1 values + {} KiB body (the limit) → 401   p50 {:.1} µs  p99 {:.1} µs  ({} HMACs in {SAMPLES} requests: one per secret)",
            limit / 1024,
            us(percentile(&five_times, 0.50)),
            us(percentile(&five_times, 0.99)),
            hmacs
        );
        println!(
            "  baseline: one HMAC-SHA256 over 1 MiB p50 {:.1} µs; the old algorithm on the forged request ≈ {:.0} ms ({} × 2 secrets × {:.1} µs)",
            us(one_hmac),
            old_cost.as_secs_f64() * 1000.0,
            FORGED_VALUES,
            us(one_hmac)
        );
        println!(
            "  ratio: forged request p50 / one HMAC over its body = {:.3}; old / new p50 = {:.0}×",
            p50.as_secs_f64() / one_hmac.as_secs_f64(),
            old_cost.as_secs_f64() / p50.as_secs_f64()
        );
    });
}
