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
