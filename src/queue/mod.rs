//! RabbitMQ (AMQP 0-9-1) through lapin. One connection per process, opened on first use and
//! re-opened after it drops; channels are cheap and taken per task.

pub mod broadcast;
pub mod consumer;
pub mod dlq;
pub mod relay;
pub mod topology;

use std::time::Duration;

use anyhow::Context;
use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use crate::config::RabbitMqSettings;
use crate::redact::scrub;

pub struct Broker {
    url: SecretString,
    prefix: String,
    connect_timeout: Duration,
    /// The CA bundle (PEM) an `amqps://` broker must chain to; none: the system's roots.
    ca_pem: Option<String>,
    connection: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Broker {
    pub fn new(settings: &RabbitMqSettings) -> anyhow::Result<Self> {
        // An `amqps://` URL builds its rustls client from the process's provider.
        crate::tls::install_crypto_provider();
        Ok(Self {
            url: settings.url()?,
            prefix: settings.prefix.clone(),
            connect_timeout: Duration::from_secs(settings.connect_timeout_secs),
            ca_pem: match &settings.ca_file {
                Some(ca) => Some(String::from_utf8(crate::tls::read_ca(
                    "rabbitmq.ca_file",
                    ca,
                )?)?),
                None => None,
            },
            connection: Mutex::new(None),
        })
    }

    /// Name of an exchange or queue of this installation.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// A channel on the shared connection, connecting (again) if needed.
    pub async fn channel(&self) -> anyhow::Result<lapin::Channel> {
        let mut guard = self.connection.lock().await;
        if let Some(connection) = guard.as_ref()
            && connection.status().connected()
        {
            return connection
                .create_channel()
                .await
                .map_err(|e| anyhow::anyhow!(scrub(&e.to_string(), &self.url)))
                .context("opening a channel");
        }
        *guard = None;
        let connection = tokio::time::timeout(
            self.connect_timeout,
            Connection::connect_with_config(
                self.url.expose_secret(),
                ConnectionProperties::default(),
                lapin::tcp::OwnedTLSConfig {
                    identity: None,
                    cert_chain: self.ca_pem.clone(),
                },
                lapin::runtime::default_runtime()?,
            ),
        )
        .await
        .context("connecting to RabbitMQ timed out")?
        // lapin's errors may carry the URI; never let the password out.
        .map_err(|e| anyhow::anyhow!(scrub(&e.to_string(), &self.url)))
        .context("connecting to RabbitMQ")?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| anyhow::anyhow!(scrub(&e.to_string(), &self.url)))
            .context("opening a channel")?;
        *guard = Some(connection);
        Ok(channel)
    }

    pub async fn check(&self) -> anyhow::Result<()> {
        let channel = self.channel().await?;
        let _ = channel.close(200, "readiness probe".into()).await;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(connection) = self.connection.lock().await.take() {
            let _ = connection.close(200, "shutting down".into()).await;
        }
    }
}

/// What the queue consumers and the outbox relay use of the process state.
#[derive(Clone, Debug)]
pub struct QueueContext {
    pub db: sqlx::PgPool,
    pub broker: std::sync::Arc<Broker>,
    pub settings: std::sync::Arc<crate::config::Settings>,
}
