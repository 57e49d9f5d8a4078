//! The credit bureau simulator (docs/integrations/bureau.md): deterministic reports for
//! every valid SSN, reserved SSNs for fault answers, and fault controls for tests, the
//! benchmark and compose. `bureau-sim --listen 127.0.0.1:8091 --api-key KEY`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Default)]
struct Faults {
    latency_ms: u64,
    error_rate: f64,
    error_status: u16,
    down_until: Option<Instant>,
    frozen: bool,
    /// The `Retry-After` of the reserved 429 SSN (default 1).
    retry_after_secs: Option<u64>,
}

struct Sim {
    api_key: String,
    /// OAuth2 client credentials the token endpoint accepts, if enabled.
    client: Option<(String, String)>,
    tokens: Mutex<HashSet<String>>,
    faults: Mutex<Faults>,
    requests: Mutex<u64>,
    reports: Mutex<u64>,
    rate_limited: Mutex<HashSet<String>>,
    rng: Mutex<u64>,
}

impl Sim {
    /// A uniform draw in [0, 1) (xorshift: the simulator needs no cryptographic randomness).
    fn coin(&self) -> f64 {
        let mut x = self.rng.lock().unwrap();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        (*x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Deserialize)]
struct Subject {
    first_name: String,
    last_name: String,
    ssn: String,
    date_of_birth: String,
    address: Value,
}

#[derive(Deserialize)]
struct PullRequest {
    reference_id: String,
    pull_type: String,
    subject: Subject,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

fn valid_ssn(ssn: &str) -> bool {
    let digits: String = ssn.chars().filter(|c| c.is_ascii_digit()).collect();
    ssn.len() == 11
        && digits.len() == 9
        && &digits[..3] != "000"
        && &digits[..3] != "666"
        && !digits.starts_with('9')
        && &digits[3..5] != "00"
        && &digits[5..] != "0000"
}

/// The report every request for this subject gets: a pure function of the SSN.
fn report(ssn: &str, pull_type: &str, reference: &str) -> Value {
    let d = digest(&[ssn]);
    let score = 300 + (u16::from_be_bytes([d[0], d[1]]) % 551);
    let kinds = ["revolving", "installment", "mortgage"];
    let statuses = [
        "current",
        "current",
        "current",
        "late_30",
        "late_60",
        "charge_off",
    ];
    let tradelines: Vec<Value> = (0..(2 + d[2] % 5) as usize)
        .map(|i| {
            let b = d[3 + i];
            json!({
                "creditor": format!("Creditor {}", (b % 26 + b'A') as char),
                "kind": kinds[b as usize % kinds.len()],
                "balance": format!("{}.00", u32::from(b) * 137),
                "limit": format!("{}.00", u32::from(b) * 250 + 1000),
                "status": statuses[d[10 + i] as usize % statuses.len()],
            })
        })
        .collect();
    let report_id = format!("SIM-{}", &hex(&digest(&[ssn, reference]))[..16]);
    json!({
        "bureau": "simbureau",
        "report_id": report_id,
        "score": score,
        "pull_type": pull_type,
        "tradelines": tradelines,
        "inquiries": [{"date": "2026-01-15", "kind": "soft"}],
        "alerts": [],
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn pull(
    sim: &Sim,
    headers: &HeaderMap,
    body: &str,
    reference_override: Option<&str>,
) -> Response {
    *sim.requests.lock().unwrap() += 1;
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let authorised = match bearer {
        Some(b) => b == sim.api_key || sim.tokens.lock().unwrap().contains(b),
        None => false,
    };
    if !authorised {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "bad api key");
    }
    if let Some(refusal) = injected_fault(sim).await {
        return refusal;
    }
    let Ok(request) = serde_json::from_str::<PullRequest>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed",
            "the body is not a pull request",
        );
    };
    let s = &request.subject;
    if !valid_ssn(&s.ssn)
        || s.first_name.is_empty()
        || s.last_name.is_empty()
        || s.date_of_birth.len() != 10
        || !s.address.is_object()
        || !matches!(request.pull_type.as_str(), "soft" | "hard")
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_subject",
            "the subject is incomplete or invalid",
        );
    }
    let reference = reference_override.unwrap_or(&request.reference_id);
    if let Some(answer) = scripted_subject(sim, &s.ssn, reference).await {
        return answer;
    }
    if sim.faults.lock().unwrap().frozen {
        return error(
            StatusCode::LOCKED,
            "credit_freeze",
            "the consumer's file is frozen",
        );
    }
    *sim.reports.lock().unwrap() += 1;
    Json(report(&s.ssn, &request.pull_type, reference)).into_response()
}

/// The faults a test set: latency first, then an outage or a random transient error.
async fn injected_fault(sim: &Sim) -> Option<Response> {
    let (latency, fail, down) = {
        let f = sim.faults.lock().unwrap();
        let fail = f.error_rate > 0.0 && sim.coin() < f.error_rate;
        let down = f.down_until.is_some_and(|t| Instant::now() < t);
        (f.latency_ms, fail.then_some(f.error_status.max(500)), down)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if down {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the bureau is down",
        ));
    }
    let status = fail?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    Some(error(status, "transient", "simulated transient error"))
}

/// The test subjects with a scripted answer (docs/integrations/bureau.md): a freeze, a
/// rate limit on the first try, a slow answer, an outage.
async fn scripted_subject(sim: &Sim, ssn: &str, reference: &str) -> Option<Response> {
    match ssn {
        "219-09-9001" => {
            return Some(error(
                StatusCode::LOCKED,
                "credit_freeze",
                "the consumer's file is frozen",
            ));
        }
        "219-09-9002"
            if sim
                .rate_limited
                .lock()
                .unwrap()
                .insert(reference.to_owned()) =>
        {
            let wait = sim.faults.lock().unwrap().retry_after_secs.unwrap_or(1);
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down");
            r.headers_mut()
                .insert("retry-after", wait.to_string().parse().unwrap());
            return Some(r);
        }
        "219-09-9003" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        "219-09-9004" => {
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "always down for this subject",
            ));
        }
        _ => {}
    }
    None
}

async fn create(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: String) -> Response {
    pull(&sim, &headers, &body, None).await
}

async fn again(
    State(sim): State<Arc<Sim>>,
    Path((report_id, _action)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    // A reissue or upgrade answers the report of the original reference.
    pull(&sim, &headers, &body, Some(&report_id)).await
}

/// OAuth2 client credentials (RFC 6749 §4.4) with HTTP Basic client authentication.
async fn token(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: String) -> Response {
    use base64::Engine;
    let Some((id, secret)) = &sim.client else {
        return error(StatusCode::NOT_FOUND, "not_found", "OAuth2 is not enabled");
    };
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if presented.as_deref() != Some(&format!("{id}:{secret}")) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "bad client credentials",
        );
    }
    if !body
        .split('&')
        .any(|p| p == "grant_type=client_credentials")
    {
        return error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "client_credentials only",
        );
    }
    let token = format!(
        "sim-token-{}",
        hex(&digest(&[&format!("{:?}", Instant::now())]))[..24].to_owned()
    );
    sim.tokens.lock().unwrap().insert(token.clone());
    Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 300})).into_response()
}

#[derive(Deserialize)]
struct Control {
    latency_ms: Option<u64>,
    error_rate: Option<f64>,
    error_status: Option<u16>,
    down_for_secs: Option<u64>,
    frozen: Option<bool>,
    retry_after_secs: Option<u64>,
    reset: Option<bool>,
}

async fn control(State(sim): State<Arc<Sim>>, Json(c): Json<Control>) -> StatusCode {
    let mut f = sim.faults.lock().unwrap();
    if c.reset == Some(true) {
        *f = Faults::default();
    }
    if let Some(v) = c.latency_ms {
        f.latency_ms = v;
    }
    if let Some(v) = c.error_rate {
        f.error_rate = v;
    }
    if let Some(v) = c.error_status {
        f.error_status = v;
    }
    if let Some(v) = c.down_for_secs {
        f.down_until = Some(Instant::now() + Duration::from_secs(v));
    }
    if let Some(v) = c.frozen {
        f.frozen = v;
    }
    if let Some(v) = c.retry_after_secs {
        f.retry_after_secs = Some(v);
    }
    StatusCode::NO_CONTENT
}

async fn stats(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(json!({
        "requests": *sim.requests.lock().unwrap(),
        "reports": *sim.reports.lock().unwrap(),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen: SocketAddr = "127.0.0.1:8091".parse()?;
    let mut api_key = "bureau-dev-key".to_owned();
    let mut client = None;
    let (mut tls_cert, mut tls_key, mut client_ca) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().unwrap_or_default().parse()?,
            "--api-key" => api_key = args.next().unwrap_or_default(),
            "--oauth2-client" => {
                let pair = args.next().unwrap_or_default();
                let (id, secret) = pair
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("--oauth2-client takes ID:SECRET"))?;
                client = Some((id.to_owned(), secret.to_owned()));
            }
            // HTTPS, and with --client-ca mutual TLS: a client certificate from that CA is
            // required, as bureaus require of lenders.
            "--tls-cert" => tls_cert = args.next(),
            "--tls-key" => tls_key = args.next(),
            "--client-ca" => client_ca = args.next(),
            other => anyhow::bail!(
                "unknown argument {other}; usage: bureau-sim [--listen ADDR] [--api-key KEY] [--oauth2-client ID:SECRET] [--tls-cert PEM --tls-key PEM [--client-ca PEM]]"
            ),
        }
    }
    let sim = Arc::new(Sim {
        api_key,
        client,
        tokens: Mutex::new(HashSet::new()),
        faults: Mutex::new(Faults {
            error_status: 503,
            ..Faults::default()
        }),
        requests: Mutex::new(0),
        reports: Mutex::new(0),
        rate_limited: Mutex::new(HashSet::new()),
        rng: Mutex::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(0x9E37_79B9),
        ),
    });
    let app = Router::new()
        .route("/v1/credit-reports", post(create))
        .route("/v1/credit-reports/{report_id}/{action}", post(again))
        .route("/oauth/token", post(token))
        .route("/__control", post(control))
        .route("/__control/stats", get(stats))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(sim);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("bureau simulator listening on {}", listener.local_addr()?);
    match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => {
            let config = tls_config(&cert, &key, client_ca.as_deref())?;
            axum_server::from_tcp_rustls(listener.into_std()?, config)?
                .serve(app.into_make_service())
                .await?;
        }
        (None, None) => axum::serve(listener, app).await?,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    }
    Ok(())
}

fn tls_config(
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    loanfolio::tls::install_crypto_provider();
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)? {
                roots.add(cert?)?;
            }
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build()?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(
        Arc::new(config),
    ))
}
