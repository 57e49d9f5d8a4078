//! Garage, the second S3 implementation the suite runs against (scripts/lib/stack.sh starts
//! one node and writes its development key to .local/garage/test-s3.json). Tests that must
//! hold on every S3 server the service supports run once on s3s-fs and once here.

use loanfolio::config::Settings;
use serde_json::Value;

use super::repo_root;

/// Point `settings` at the local Garage (browsers reach it directly: no CORS front; the
/// bucket's own CORS rule answers preflights, `Storage::allow_browser_uploads`).
pub fn use_garage(settings: &mut Settings) {
    let path = repo_root().join(".local/garage/test-s3.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} — run scripts/test (or scripts/dev) once: it starts Garage",
            path.display()
        )
    });
    let garage: Value = serde_json::from_str(&text).unwrap();
    settings.s3.endpoint = garage["endpoint"].as_str().unwrap().parse().unwrap();
    settings.s3.public_endpoint = None;
    settings.s3.region = garage["region"].as_str().unwrap().to_owned();
    settings.s3.set_credentials(
        garage["access_key_id"].as_str().unwrap(),
        garage["secret_access_key"].as_str().unwrap(),
    );
}

/// A call to the local Garage's admin API (v2) with its development admin token.
pub async fn admin(endpoint: &str, body: Option<Value>) -> Value {
    let dir = repo_root().join(".local/garage");
    let token = std::fs::read_to_string(dir.join("admin-token")).unwrap();
    let port = std::env::var("LOANFOLIO_DEV_GARAGE_ADMIN_PORT").unwrap_or_else(|_| "3903".into());
    let url = format!("http://127.0.0.1:{port}/v2/{endpoint}");
    let client = reqwest::Client::new();
    let request = match body {
        Some(body) => client.post(url).json(&body),
        None => client.get(url),
    };
    let response = request.bearer_auth(token.trim()).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "Garage {endpoint}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}
