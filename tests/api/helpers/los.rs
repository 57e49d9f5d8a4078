//! A private LOS simulator (src/bin/los-sim.rs) for one test: it sends milestone webhooks
//! to the test's app only when the test tells it to.

use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::{free_port, port_opens};

pub const API_KEY: &str = "test-los-key";
pub const WEBHOOK_SECRET: &str = "test-los-webhook-secret";

pub struct PrivateLos {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateLos {
    /// A port for the simulator, so the app can be configured before either starts.
    pub fn reserve() -> Self {
        Self {
            port: free_port(),
            child: None,
        }
    }

    pub fn configure(&self, settings: &mut loanfolio::config::Settings) {
        settings.los.base_url = format!("http://127.0.0.1:{}", self.port).parse().unwrap();
        settings.los.set_api_key(API_KEY);
        settings.los.set_webhook_secrets(&[WEBHOOK_SECRET]);
    }

    /// Start it, delivering webhooks to `webhook_url`.
    pub async fn start(&mut self, webhook_url: &str) {
        let port = self.port;
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_los-sim"))
                .args([
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--api-key",
                    API_KEY,
                    "--webhook-url",
                    webhook_url,
                    "--webhook-secret",
                    WEBHOOK_SECRET,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the LOS simulator"),
        );
        let up = port_opens(port, 20).await;
        assert!(up, "the LOS simulator did not start");
    }

    pub async fn milestone(&self, los_loan_id: &str, milestone: &str, deliver: bool) -> Value {
        let response = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/__control/milestone", self.port))
            .json(&serde_json::json!({"los_loan_id": los_loan_id, "milestone": milestone, "deliver": deliver}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        response.json().await.unwrap()
    }
}

impl Drop for PrivateLos {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
