//! clamd over TCP (clamav-client). Clean means exactly `stream: OK`; anything else —
//! FOUND, an error, a size-limit reply, a timeout — is never clean (docs/security.md).

pub mod sniff;

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

    /// INSTREAM a byte stream. Clean only on exactly `stream: OK`.
    pub async fn scan<S>(&self, input: S) -> ScanOutcome
    where
        S: futures::Stream<Item = Result<bytes::Bytes, std::io::Error>>,
    {
        let reply = tokio::time::timeout(
            self.timeout,
            clamav_client::tokio::scan_stream(
                input,
                Tcp {
                    host_address: self.address.as_str(),
                },
                Some(64 * 1024),
            ),
        )
        .await;
        match reply {
            Err(_) => ScanOutcome::NotScanned("clamd did not answer in time".into()),
            Ok(Err(e)) => ScanOutcome::NotScanned(format!("clamd: {e}")),
            Ok(Ok(reply)) => classify(&reply),
        }
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    Clean,
    Infected(String),
    /// An error, a size-limit reply, a timeout: never clean; retry.
    NotScanned(String),
}

pub fn classify(reply: &[u8]) -> ScanOutcome {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\0', '\n']);
    if text == "stream: OK" {
        ScanOutcome::Clean
    } else if let Some(name) = text
        .strip_prefix("stream: ")
        .and_then(|r| r.strip_suffix(" FOUND"))
    {
        if name.starts_with("Heuristics.Limits.Exceeded") {
            // AlertExceedsMax: clamd did not read all of it. Not scanned, not infected.
            ScanOutcome::NotScanned("clamd's scan limits were exceeded".into())
        } else {
            ScanOutcome::Infected(name.to_owned())
        }
    } else {
        ScanOutcome::NotScanned(format!(
            "clamd replied: {}",
            text.chars().take(120).collect::<String>()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_exact_ok_is_clean() {
        assert_eq!(classify(b"stream: OK\0"), ScanOutcome::Clean);
        assert_eq!(
            classify(b"stream: Loanfolio.Test.EICAR.UNOFFICIAL FOUND\0"),
            ScanOutcome::Infected("Loanfolio.Test.EICAR.UNOFFICIAL".into())
        );
        assert!(matches!(
            classify(b"INSTREAM size limit exceeded. ERROR\0"),
            ScanOutcome::NotScanned(_)
        ));
        assert!(matches!(
            classify(b"stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND\0"),
            ScanOutcome::NotScanned(_)
        ));
        assert!(matches!(classify(b""), ScanOutcome::NotScanned(_)));
        assert!(matches!(
            classify(b"stream: OK but more"),
            ScanOutcome::NotScanned(_)
        ));
    }
}
