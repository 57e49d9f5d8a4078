//! A private bureau simulator (src/bin/bureau-sim.rs) on a free port: its fault controls are
//! per instance, so every test gets its own.

use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::{free_port, port_opens};

pub const API_KEY: &str = "test-bureau-key";

pub struct PrivateBureau {
    pub port: u16,
    child: Child,
}

impl PrivateBureau {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With extra arguments, e.g. `["--oauth2-client", "id:secret"]`.
    pub async fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_bureau-sim"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--api-key",
                API_KEY,
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the bureau simulator");
        let up = port_opens(port, 20).await;
        assert!(up, "the bureau simulator did not start");
        Self { port, child }
    }

    pub fn url(&self) -> url::Url {
        format!("http://127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// Point `settings` at this simulator with its key.
    pub fn configure(&self, settings: &mut loanfolio::config::Settings) {
        settings.bureau.base_url = self.url();
        settings.bureau.set_api_key(API_KEY);
    }

    pub async fn control(&self, faults: Value) {
        let response = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/__control", self.port))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Requests the simulator received on its API (faults included).
    pub async fn requests(&self) -> u64 {
        let stats: Value = reqwest::get(format!("http://127.0.0.1:{}/__control/stats", self.port))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["requests"].as_u64().unwrap()
    }
}

impl Drop for PrivateBureau {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
