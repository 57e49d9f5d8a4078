//! The LOS client (docs/integrations/los.md): submission (idempotent on our loan id) and
//! status queries, with timeouts and the circuit breaker. No borrower PII crosses it.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::breaker::{Breaker, Open};
use crate::config::LosSettings;

#[derive(Debug, thiserror::Error)]
pub enum LosError {
    #[error("transient LOS failure: {0}")]
    Transient(String),
    #[error("the LOS refused: {0}")]
    Permanent(&'static str),
    #[error("the LOS circuit breaker is open")]
    CircuitOpen(Duration),
}

pub struct LosClient {
    http: reqwest::Client,
    base_url: url::Url,
    api_key: Option<SecretString>,
    pub breaker: Breaker,
}

impl std::fmt::Debug for LosClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LosClient")
            .field("base_url", &self.base_url.as_str())
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

impl LosClient {
    pub fn new(settings: &LosSettings) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .timeout(Duration::from_millis(settings.timeout_ms));
        builder = crate::tls::pin_roots(builder, "los.ca_file", settings.ca_file.as_deref())?;
        Ok(Self {
            http: builder.build()?,
            base_url: settings.base_url.clone(),
            api_key: settings.api_key()?,
            breaker: Breaker::new(settings.breaker.clone()),
        })
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, LosError> {
        let Some(api_key) = &self.api_key else {
            return Err(LosError::Permanent("los_not_configured"));
        };
        self.breaker
            .permit()
            .map_err(|Open { retry_in }| LosError::CircuitOpen(retry_in))?;
        let response = match request.bearer_auth(api_key.expose_secret()).send().await {
            Ok(r) => r,
            Err(e) => {
                self.breaker.record(false);
                return Err(LosError::Transient(
                    if e.is_timeout() {
                        "timeout"
                    } else {
                        "connection failed"
                    }
                    .into(),
                ));
            }
        };
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            self.breaker.record(!status.is_server_error());
            return Err(LosError::Transient(format!("HTTP {}", status.as_u16())));
        }
        self.breaker.record(true);
        match status.as_u16() {
            200..=299 => response
                .json()
                .await
                .map_err(|_| LosError::Transient("an unreadable answer".into())),
            401 | 403 => Err(LosError::Permanent("los_unauthorized")),
            404 => Err(LosError::Permanent("los_unknown_loan")),
            _ => Err(LosError::Permanent("los_rejected")),
        }
    }

    /// Submit a loan; the LOS's id for it. Idempotent on `loan_id`.
    pub async fn submit(
        &self,
        loan_id: uuid::Uuid,
        loan_type: &str,
        amount: &str,
    ) -> Result<String, LosError> {
        let base = self.base_url.as_str().trim_end_matches('/');
        let answer = self
            .call(self.http.post(format!("{base}/v1/loans")).json(&json!({
                "loan_id": loan_id, "loan_type": loan_type, "amount": amount,
            })))
            .await?;
        answer
            .get("los_loan_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(LosError::Permanent("los_malformed_answer"))
    }

    /// The LOS's current milestone for one of its loans.
    pub async fn milestone(&self, los_loan_id: &str) -> Result<String, LosError> {
        let base = self.base_url.as_str().trim_end_matches('/');
        let id =
            percent_encoding::utf8_percent_encode(los_loan_id, percent_encoding::NON_ALPHANUMERIC);
        let answer = self
            .call(self.http.get(format!("{base}/v1/loans/{id}")))
            .await?;
        answer
            .get("milestone")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(LosError::Permanent("los_malformed_answer"))
    }
}
