//! clamd over TCP (clamav-client). Clean means exactly `stream: OK`; anything else —
//! FOUND, an error, a size-limit reply, a timeout — is never clean (DESIGN.md §2).

use std::time::Duration;

use anyhow::{Context, bail};
use clamav_client::tokio::Tcp;

use crate::config::ClamdSettings;

#[derive(Clone, Debug)]
pub struct Clamd {
    address: String,
    timeout: Duration,
}

impl Clamd {
    pub fn new(settings: &ClamdSettings) -> Self {
        Self {
            address: settings.address.clone(),
            timeout: Duration::from_secs(settings.timeout_secs),
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// PING → PONG. A fresh connection each time, as clamd expects for `z` commands.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let reply = tokio::time::timeout(
            self.timeout,
            clamav_client::tokio::ping(Tcp {
                host_address: self.address.as_str(),
            }),
        )
        .await
        .context("clamd did not answer PING in time")?
        .context("connecting to clamd")?;
        if reply.as_slice() != clamav_client::PONG {
            bail!("clamd answered PING with something other than PONG");
        }
        Ok(())
    }
}
