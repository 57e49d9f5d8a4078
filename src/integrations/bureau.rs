//! The credit bureau client (docs/integrations/bureau.md): one JSON call per pull, connect and
//! total timeouts, the circuit breaker, and answers sorted into transient (retry, counts
//! against the breaker), permanent (fail the pull with a reason) and refused (breaker open).
//! Error texts never carry the subject: only statuses and codes.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;

use super::breaker::{Breaker, Open};
use crate::config::BureauSettings;

#[derive(Debug, Serialize)]
pub struct Address {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub state: String,
    pub postal_code: String,
}

/// Who is pulled: decrypted only in memory, for the length of the call.
#[derive(Serialize)]
pub struct Subject {
    pub first_name: String,
    pub last_name: String,
    pub ssn: String,
    pub date_of_birth: String,
    pub address: Value,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subject { .. }")
    }
}

#[derive(Debug, Serialize)]
struct PullBody<'a> {
    reference_id: String,
    pull_type: &'a str,
    subject: &'a Subject,
}

#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    New,
    Reissue(&'a str),
    Upgrade(&'a str),
}

#[derive(Debug)]
pub struct Report {
    /// The bureau's whole answer, stored encrypted.
    pub raw: Value,
    pub bureau: String,
    pub report_id: String,
    pub score: Option<i32>,
}

#[derive(Debug, thiserror::Error)]
pub enum BureauError {
    #[error("transient bureau failure: {reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    #[error("the bureau refused the pull: {0}")]
    Permanent(&'static str),
    #[error("the bureau's circuit breaker is open")]
    CircuitOpen(Duration),
}

/// How the client proves who it is to the bureau.
enum Auth {
    None,
    ApiKey(SecretString),
    /// Client credentials; the access token is cached until shortly before it expires.
    OAuth2(Box<OAuth2Client>),
}

struct OAuth2Client {
    settings: crate::config::OAuth2Settings,
    secret: SecretString,
    token: tokio::sync::Mutex<Option<(SecretString, std::time::Instant)>>,
}

pub struct BureauClient {
    http: reqwest::Client,
    base_url: url::Url,
    auth: Auth,
    pub breaker: Breaker,
}

impl std::fmt::Debug for BureauClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BureauClient")
            .field("base_url", &self.base_url.as_str())
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

impl BureauClient {
    pub fn new(settings: &BureauSettings) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .timeout(Duration::from_millis(settings.timeout_ms));
        builder = crate::tls::pin_roots(builder, "bureau.ca_file", settings.ca_file.as_deref())?;
        match (&settings.client_cert_file, &settings.client_key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = std::fs::read(cert).map_err(|e| {
                    anyhow::anyhow!("bureau.client_cert_file {}: {e}", cert.display())
                })?;
                pem.extend(std::fs::read(key).map_err(|e| {
                    anyhow::anyhow!("bureau.client_key_file {}: {e}", key.display())
                })?);
                builder = builder.identity(reqwest::Identity::from_pem(&pem)?);
            }
            (None, None) => {}
            _ => anyhow::bail!("bureau.client_cert_file and bureau.client_key_file go together"),
        }
        let auth = match (&settings.oauth2, settings.api_key()?) {
            (Some(oauth2), _) => Auth::OAuth2(Box::new(OAuth2Client {
                secret: oauth2.client_secret()?,
                settings: oauth2.clone(),
                token: tokio::sync::Mutex::new(None),
            })),
            (None, Some(key)) => Auth::ApiKey(key),
            (None, None) => Auth::None,
        };
        Ok(Self {
            http: builder.build()?,
            base_url: settings.base_url.clone(),
            auth,
            breaker: Breaker::new(settings.breaker.clone()),
        })
    }

    /// The bearer credential for the next call.
    async fn bearer(&self) -> Result<SecretString, BureauError> {
        match &self.auth {
            Auth::None => Err(BureauError::Permanent("bureau_not_configured")),
            Auth::ApiKey(key) => Ok(key.clone()),
            Auth::OAuth2(client) => {
                let OAuth2Client {
                    settings,
                    secret,
                    token,
                } = client.as_ref();
                let mut cached = token.lock().await;
                if let Some((token, until)) = cached.as_ref()
                    && std::time::Instant::now() < *until
                {
                    return Ok(token.clone());
                }
                let mut form = String::from("grant_type=client_credentials");
                if let Some(scope) = &settings.scope {
                    form.push_str("&scope=");
                    form.push_str(&urlencode(scope));
                }
                let transient = |reason: &str| BureauError::Transient {
                    reason: format!("token endpoint: {reason}"),
                    retry_after: None,
                };
                let response = self
                    .http
                    .post(settings.token_url.clone())
                    .basic_auth(&settings.client_id, Some(secret.expose_secret()))
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form)
                    .send()
                    .await
                    .map_err(|_| transient("unreachable"))?;
                match response.status().as_u16() {
                    200..=299 => {}
                    400 | 401 | 403 => return Err(BureauError::Permanent("bureau_unauthorized")),
                    status => return Err(transient(&format!("HTTP {status}"))),
                }
                let body: Value = response.json().await.map_err(|_| transient("unreadable"))?;
                let access = body
                    .get("access_token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| transient("no access_token"))?;
                let lifetime = body.get("expires_in").and_then(Value::as_u64).unwrap_or(60);
                // Renew a little early so a token never expires in flight.
                let until = std::time::Instant::now()
                    + Duration::from_secs(lifetime.saturating_sub(30).max(1));
                let access = SecretString::from(access.to_owned());
                *cached = Some((access.clone(), until));
                Ok(access)
            }
        }
    }

    pub async fn pull(
        &self,
        kind: Kind<'_>,
        reference_id: uuid::Uuid,
        pull_type: &str,
        subject: &Subject,
    ) -> Result<Report, BureauError> {
        let credential = self.bearer().await?;
        self.breaker
            .permit()
            .map_err(|Open { retry_in }| BureauError::CircuitOpen(retry_in))?;
        let base = self.base_url.as_str().trim_end_matches('/');
        let url = match kind {
            Kind::New => format!("{base}/v1/credit-reports"),
            Kind::Reissue(id) => format!("{base}/v1/credit-reports/{}/reissue", urlencode(id)),
            Kind::Upgrade(id) => format!("{base}/v1/credit-reports/{}/upgrade", urlencode(id)),
        };
        let body = PullBody {
            reference_id: reference_id.to_string(),
            pull_type,
            subject,
        };
        let answer = self
            .http
            .post(url)
            .bearer_auth(credential.expose_secret())
            .json(&body)
            .send()
            .await;
        let response = answer.map_err(|e| {
            self.breaker.record(false);
            unreachable_bureau(&e)
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if status.is_server_error() {
            self.breaker.record(false);
            return Err(BureauError::Transient {
                reason: format!("HTTP {}", status.as_u16()),
                retry_after,
            });
        }
        // Anything else means the bureau itself is working.
        self.breaker.record(true);
        match status.as_u16() {
            200..=299 => {}
            429 => {
                return Err(BureauError::Transient {
                    reason: "HTTP 429".into(),
                    retry_after,
                });
            }
            401 | 403 => {
                if let Auth::OAuth2(client) = &self.auth {
                    *client.token.lock().await = None;
                }
                return Err(BureauError::Permanent("bureau_unauthorized"));
            }
            423 => return Err(BureauError::Permanent("credit_freeze")),
            _ => return Err(BureauError::Permanent("bureau_rejected")),
        }
        let raw: Value = response.json().await.map_err(|_| BureauError::Transient {
            reason: "an unreadable answer".into(),
            retry_after: None,
        })?;
        Report::from_raw(raw)
    }
}

/// A request that got no answer: retried (the error's text stays out: it may echo the URL).
fn unreachable_bureau(e: &reqwest::Error) -> BureauError {
    let reason = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    BureauError::Transient {
        reason: reason.into(),
        retry_after: None,
    }
}

impl Report {
    /// The summary the service keeps in columns, read from the bureau's report.
    fn from_raw(raw: Value) -> Result<Report, BureauError> {
        let text = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_owned);
        let (Some(bureau), Some(report_id)) = (text("bureau"), text("report_id")) else {
            return Err(BureauError::Permanent("bureau_malformed_report"));
        };
        let score = raw
            .get("score")
            .and_then(Value::as_i64)
            .and_then(|s| i32::try_from(s).ok());
        Ok(Report {
            raw,
            bureau,
            report_id,
            score,
        })
    }
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
