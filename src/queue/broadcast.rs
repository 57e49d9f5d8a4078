//! Broadcast events: every process (each `serve` and each `worker`) hears one topic through
//! its own exclusive, auto-deleted queue bound to `{p}.events` — unlike a consumer's shared
//! queue, where one process of many gets each message. Used to drop cached data keys of a
//! disposed borrower file in every process (docs/operations/retention.md).
//!
//! A broadcast heard by nobody is lost (the queue exists only while its process is
//! connected), so `on_connect` runs on every (re)connection: the caller resets whatever the
//! broadcasts keep fresh, as it may have missed some.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use uuid::Uuid;

use super::QueueContext;
use super::topology::{self, Names};

/// Hear `topic` until the task is dropped: `on_connect` after each (re)connection, then
/// `on_message` with each event's JSON payload.
pub async fn listen(
    state: QueueContext,
    topic: &'static str,
    on_connect: impl Fn() + Send,
    on_message: impl Fn(&[u8]) + Send,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match hear(&state, topic, &on_connect, &on_message).await {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(e) => {
                tracing::warn!(topic, error = %format!("{e:#}"), "broadcast listener stopped; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn hear(
    state: &QueueContext,
    topic: &str,
    on_connect: &(impl Fn() + Send),
    on_message: &(impl Fn(&[u8]) + Send),
) -> anyhow::Result<()> {
    let names = Names {
        prefix: state.settings.rabbitmq.prefix.clone(),
    };
    let channel = state.broker.channel().await?;
    topology::declare_exchanges(&channel, &names).await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.name().as_str().into(),
            names.events().as_str().into(),
            topic.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut deliveries = channel
        .basic_consume(
            queue.name().as_str().into(),
            format!("broadcast-{}", Uuid::now_v7().simple())
                .as_str()
                .into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    on_connect();
    while let Some(delivery) = deliveries.next().await {
        on_message(&delivery?.data);
    }
    anyhow::bail!("the broker closed the broadcast queue")
}
