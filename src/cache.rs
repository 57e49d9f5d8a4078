//! Redis: sessions, rate-limit counters and short-lived caches — never the only copy of
//! anything. The connection manager is created on first use and reconnects by itself.

use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;

use crate::config::RedisSettings;
use crate::redact::scrub;

pub struct Cache {
    client: redis::Client,
    url: SecretString,
    key_prefix: String,
    timeout: Duration,
    manager: OnceCell<ConnectionManager>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl Cache {
    pub fn new(settings: &RedisSettings) -> anyhow::Result<Self> {
        // A `rediss://` URL builds its rustls client from the process's provider.
        crate::tls::install_crypto_provider();
        let url = settings.url()?;
        let client = match &settings.ca_file {
            Some(ca) => redis::Client::build_with_tls(
                url.expose_secret(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(crate::tls::read_ca("redis.ca_file", ca)?),
                },
            ),
            None => redis::Client::open(url.expose_secret()),
        }
        .map_err(|_| anyhow::anyhow!("redis.url is not a valid Redis URL"))?;
        Ok(Self {
            client,
            url,
            key_prefix: settings.key_prefix.clone(),
            timeout: Duration::from_millis(settings.timeout_ms),
            manager: OnceCell::new(),
        })
    }

    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.key_prefix)
    }

    pub async fn connection(&self) -> anyhow::Result<ConnectionManager> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config)
                    .await
                    .map_err(|e| anyhow::anyhow!(scrub(&e.to_string(), &self.url)))
                    .context("connecting to Redis")
            })
            .await?;
        Ok(manager.clone())
    }

    pub async fn check(&self) -> anyhow::Result<()> {
        let mut connection = self.connection().await?;
        let reply: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(|e| anyhow::anyhow!(scrub(&e.to_string(), &self.url)))
            .context("Redis PING")?;
        anyhow::ensure!(reply == "PONG", "Redis answered PING with {reply}");
        Ok(())
    }
}
