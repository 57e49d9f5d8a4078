//! The LOS simulator (docs/integrations/los.md): accepts loan submissions (idempotent on
//! our loan id), answers status queries, and sends milestone webhooks ONLY when told to
//! through its control API — never by itself, so nothing races an agent or a manager.
//! `los-sim --listen ADDR --api-key KEY --webhook-url URL --webhook-secret SECRET`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Clone)]
struct LosLoan {
    los_loan_id: String,
    loan_id: String,
    milestone: String,
}

#[derive(Default)]
struct Faults {
    down_until: Option<Instant>,
    error_rate_percent: u64,
}

struct Sim {
    api_key: String,
    webhook_url: Option<String>,
    webhook_secret: String,
    loans: Mutex<HashMap<String, LosLoan>>,
    faults: Mutex<Faults>,
    requests: Mutex<u64>,
    submissions: Mutex<u64>,
    http: reqwest::Client,
}

fn error(status: StatusCode, code: &str) -> Response {
    (status, Json(json!({"error": code}))).into_response()
}

impl Sim {
    fn gate(&self, headers: &HeaderMap) -> Option<Response> {
        let n = {
            let mut r = self.requests.lock().unwrap();
            *r += 1;
            *r
        };
        let authorised = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            == Some(self.api_key.as_str());
        if !authorised {
            return Some(error(StatusCode::UNAUTHORIZED, "unauthorized"));
        }
        let f = self.faults.lock().unwrap();
        if f.down_until.is_some_and(|t| Instant::now() < t) {
            return Some(error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
        }
        // Deterministic "error rate": every k-th request fails.
        if f.error_rate_percent > 0 && (n * f.error_rate_percent) % 100 < f.error_rate_percent {
            return Some(error(StatusCode::SERVICE_UNAVAILABLE, "transient"));
        }
        None
    }
}

#[derive(Deserialize)]
struct Submission {
    loan_id: String,
    #[allow(dead_code)]
    loan_type: String,
    #[allow(dead_code)]
    amount: String,
}

async fn submit(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Json(s): Json<Submission>,
) -> Response {
    if let Some(refused) = sim.gate(&headers) {
        return refused;
    }
    let mut loans = sim.loans.lock().unwrap();
    if let Some(existing) = loans.values().find(|l| l.loan_id == s.loan_id) {
        let l = existing.clone();
        return (StatusCode::OK, Json(json!({"los_loan_id": l.los_loan_id, "loan_id": l.loan_id, "milestone": l.milestone}))).into_response();
    }
    let los_loan_id = format!("LOS-{:06}", loans.len() + 1);
    let loan = LosLoan {
        los_loan_id: los_loan_id.clone(),
        loan_id: s.loan_id.clone(),
        milestone: "submitted".into(),
    };
    loans.insert(los_loan_id.clone(), loan);
    *sim.submissions.lock().unwrap() += 1;
    (
        StatusCode::CREATED,
        Json(json!({"los_loan_id": los_loan_id, "loan_id": s.loan_id, "milestone": "submitted"})),
    )
        .into_response()
}

async fn status(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = sim.gate(&headers) {
        return refused;
    }
    match sim.loans.lock().unwrap().get(&id) {
        Some(l) => Json(
            json!({"los_loan_id": l.los_loan_id, "loan_id": l.loan_id, "milestone": l.milestone}),
        )
        .into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found"),
    }
}

fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    ring::hmac::sign(&key, &message)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Deserialize)]
struct Milestone {
    los_loan_id: String,
    milestone: String,
    /// false: change the LOS's state but drop the webhook (a lost delivery).
    deliver: Option<bool>,
    event_id: Option<String>,
}

async fn milestone(State(sim): State<Arc<Sim>>, Json(m): Json<Milestone>) -> Response {
    let loan = {
        let mut loans = sim.loans.lock().unwrap();
        let Some(loan) = loans.get_mut(&m.los_loan_id) else {
            return error(StatusCode::NOT_FOUND, "not_found");
        };
        loan.milestone = m.milestone.clone();
        loan.clone()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let event_id = m
        .event_id
        .unwrap_or_else(|| format!("evt-{}", now.as_nanos()));
    let body = serde_json::to_vec(&json!({
        "event_id": event_id, "type": "loan.milestone", "los_loan_id": loan.los_loan_id,
        "loan_id": loan.loan_id, "milestone": loan.milestone,
        "occurred_at": time_rfc3339(now.as_secs()),
    }))
    .unwrap();
    let mut delivered = Value::Null;
    if m.deliver.unwrap_or(true)
        && let Some(url) = &sim.webhook_url
    {
        let t = now.as_secs();
        let answer = sim
            .http
            .post(url)
            .header("content-type", "application/json")
            .header(
                "Loanfolio-Signature",
                format!("t={t},v1={}", sign(&sim.webhook_secret, t, &body)),
            )
            .body(body.clone())
            .send()
            .await;
        delivered = match answer {
            Ok(r) => json!(r.status().as_u16()),
            Err(_) => json!("unreachable"),
        };
    }
    Json(json!({"event_id": event_id, "delivered": delivered, "body": String::from_utf8_lossy(&body)})).into_response()
}

/// RFC 3339 (UTC) without a date library: days from the civil-from-days algorithm.
fn time_rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[derive(Deserialize)]
struct Control {
    down_for_secs: Option<u64>,
    error_rate_percent: Option<u64>,
    reset: Option<bool>,
}

async fn control(State(sim): State<Arc<Sim>>, Json(c): Json<Control>) -> StatusCode {
    let mut f = sim.faults.lock().unwrap();
    if c.reset == Some(true) {
        *f = Faults::default();
    }
    if let Some(s) = c.down_for_secs {
        f.down_until = Some(Instant::now() + Duration::from_secs(s));
    }
    if let Some(p) = c.error_rate_percent {
        f.error_rate_percent = p.min(100);
    }
    StatusCode::NO_CONTENT
}

async fn stats(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(json!({
        "requests": *sim.requests.lock().unwrap(),
        "submissions": *sim.submissions.lock().unwrap(),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen: SocketAddr = "127.0.0.1:8092".parse()?;
    let mut api_key = "los-dev-key".to_owned();
    let mut webhook_url = None;
    let mut webhook_secret = "los-dev-webhook-secret".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--listen" => listen = value.parse()?,
            "--api-key" => api_key = value,
            "--webhook-url" => webhook_url = Some(value),
            "--webhook-secret" => webhook_secret = value,
            other => anyhow::bail!(
                "unknown argument {other}; usage: los-sim [--listen ADDR] [--api-key KEY] [--webhook-url URL] [--webhook-secret S]"
            ),
        }
    }
    let sim = Arc::new(Sim {
        api_key,
        webhook_url,
        webhook_secret,
        loans: Mutex::new(HashMap::new()),
        faults: Mutex::new(Faults::default()),
        requests: Mutex::new(0),
        submissions: Mutex::new(0),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
    });
    let app = Router::new()
        .route("/v1/loans", post(submit))
        .route("/v1/loans/{id}", get(status))
        .route("/__control", post(control))
        .route("/__control/milestone", post(milestone))
        .route("/__control/stats", get(stats))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(sim);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("LOS simulator listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(super::time_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::time_rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
