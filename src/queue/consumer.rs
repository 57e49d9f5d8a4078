//! The consumer framework: bounded prefetch; a manual ack only after the handler's
//! transaction committed; idempotent by message id (the `inbox` table, written in the same
//! transaction); transient failures retried through the fixed-delay retry queues; after the
//! last tier — or at once for a permanent failure — the message goes to the consumer's DLQ
//! and the handler records a visible failed state.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use super::QueueContext;
use super::topology::{self, Names, RETRY_TIERS};

/// Attached as context to a transient error when the other side said how long to wait
/// (`Retry-After`, an open circuit breaker): the retry waits at least that long.
#[derive(Debug, Clone, Copy)]
pub struct RetryAfter(pub std::time::Duration);

impl std::fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "asked to retry after {} s", self.0.as_secs())
    }
}

/// The retry queue's delay for `attempt`: its tier, or the smallest tier that honours the
/// other side's `RetryAfter` (at most the longest tier).
fn retry_delay(attempt: u32, error: &anyhow::Error) -> u32 {
    let tier = RETRY_TIERS[(attempt as usize).min(RETRY_TIERS.len() - 1)];
    match error.downcast_ref::<RetryAfter>() {
        Some(RetryAfter(wait)) => RETRY_TIERS
            .iter()
            .copied()
            .find(|t| u64::from(*t) >= wait.as_secs())
            .unwrap_or(RETRY_TIERS[RETRY_TIERS.len() - 1])
            .max(tier),
        None => tier,
    }
}

#[derive(Debug)]
pub enum HandlerError {
    /// Worth retrying (a dependency is down, a timeout).
    Transient(anyhow::Error),
    /// Retrying cannot help (malformed message, a permanent refusal).
    Permanent(anyhow::Error),
}

impl HandlerError {
    /// A borrower file's data key that cannot be had: transient while the key service is
    /// down, permanent once the file was disposed (retrying would never succeed).
    pub fn of_key(e: anyhow::Error) -> Self {
        if crate::crypto::keyring::is_disposed(&e) {
            HandlerError::Permanent(e)
        } else {
            HandlerError::Transient(e)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Message {
    pub id: Uuid,
    pub topic: String,
    pub payload: serde_json::Value,
    /// The payload decoded under its topic and version (`None`: not an event this build
    /// knows — the production handlers dead-letter it, see [`Message::event`]).
    pub decoded: Option<crate::events::Event>,
    /// 0 on first delivery; counts retries through the retry queues.
    pub attempt: u32,
    pub request_id: Option<String>,
}

impl Message {
    /// The event this message carries, or a permanent error: retrying cannot make an
    /// unknown topic, version or payload known.
    pub fn event(&self) -> Result<&crate::events::Event, HandlerError> {
        self.decoded.as_ref().ok_or_else(|| {
            HandlerError::Permanent(anyhow::anyhow!(
                "not a {} event this version understands",
                self.topic
            ))
        })
    }
}

pub trait Handler: Send + Sync + 'static {
    /// The consumer's name: its queues are `{prefix}.{name}…`.
    fn name(&self) -> &str;
    fn topics(&self) -> Vec<String>;
    /// Do the work in `tx`; it commits (and the message is acked) only on `Ok`.
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
    /// After the work committed (before the ack): clean-up that must not run unless the
    /// outcome is recorded, such as deleting an input. Best effort: a crash skips it, so the
    /// same clean-up needs a sweeper too.
    fn committed<'a>(&'a self, _message: &'a Message) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    /// The message is going to the DLQ: record the entity's visible failed state.
    fn exhausted<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        _message: &'a Message,
        _error: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties
        .headers()
        .as_ref()?
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .map(|(_, v)| v)
}

fn header_u32(properties: &BasicProperties, name: &str) -> Option<u32> {
    match header(properties, name)? {
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        _ => None,
    }
}

fn header_string(properties: &BasicProperties, name: &str) -> Option<String> {
    match header(properties, name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Publish a copy of a delivery (same id, type and body) with new headers.
async fn republish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    delivery: &lapin::message::Delivery,
    attempt: u32,
    error: Option<&str>,
) -> anyhow::Result<()> {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert("x-attempt".into(), AMQPValue::LongInt(attempt as i32));
    if let Some(error) = error {
        headers.insert("x-error".into(), AMQPValue::LongString(error.into()));
    }
    let properties = delivery
        .properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(2);
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            &delivery.data,
            properties,
        )
        .await?
        .await?;
    anyhow::ensure!(
        matches!(confirm, lapin::Confirmation::Ack(_)),
        "the broker refused the message"
    );
    Ok(())
}

/// Consume until the task is dropped, reconnecting after broker failures.
pub async fn run(state: impl Into<QueueContext>, handler: Arc<dyn Handler>, prefetch: u16) {
    let state: QueueContext = state.into();
    let mut backoff = Duration::from_millis(250);
    loop {
        // A panic in a handler must not silently end consumption for the life of the
        // process: the channel closes, its unacked messages return, and we start over.
        let attempt = std::panic::AssertUnwindSafe(consume(&state, handler.clone(), prefetch));
        match futures::FutureExt::catch_unwind(attempt)
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("a handler panicked")))
        {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(e) => {
                tracing::warn!(consumer = handler.name(), error = %format!("{e:#}"), "consumer stopped; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn consume(
    state: &QueueContext,
    handler: Arc<dyn Handler>,
    prefetch: u16,
) -> anyhow::Result<()> {
    let names = Names {
        prefix: state.settings.rabbitmq.prefix.clone(),
    };
    let channel = state.broker.channel().await?;
    let topics = handler.topics();
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    topology::declare_consumer(&channel, &names, handler.name(), &topic_refs).await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            names.queue(handler.name()).as_str().into(),
            format!("{}-{}", handler.name(), Uuid::now_v7().simple())
                .as_str()
                .into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Up to `prefetch` messages in flight at once, each in its own transaction; the broker
    // never hands out more than that unacknowledged.
    let (channel, names, handler) = (&channel, &names, handler.as_ref());
    consumer
        .map(|delivery| delivery.context("receiving"))
        .try_for_each_concurrent(Some(usize::from(prefetch.max(1))), |delivery| async move {
            process(state, channel, names, handler, &delivery).await
        })
        .await
}

async fn process(
    state: &QueueContext,
    channel: &Channel,
    names: &Names,
    handler: &dyn Handler,
    delivery: &lapin::message::Delivery,
) -> anyhow::Result<()> {
    let properties = &delivery.properties;
    let parsed = (|| {
        let id = properties
            .message_id()
            .as_ref()
            .and_then(|m| Uuid::parse_str(m.as_str()).ok())
            .context("no message id")?;
        let payload = serde_json::from_slice(&delivery.data).context("the body is not JSON")?;
        let topic = properties
            .kind()
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_else(|| delivery.routing_key.to_string());
        // Messages published before events carried a version are version 1.
        let version = header_u32(properties, "x-event-version").unwrap_or(1);
        anyhow::Ok(Message {
            id,
            decoded: crate::events::Event::decode(&topic, version, &payload),
            topic,
            payload,
            attempt: header_u32(properties, "x-attempt").unwrap_or(0),
            request_id: header_string(properties, "x-request-id"),
        })
    })();
    let message = match parsed {
        Ok(message) => message,
        Err(e) => {
            republish(
                channel,
                &names.dlx(),
                handler.name(),
                delivery,
                0,
                Some("malformed message"),
            )
            .await?;
            delivery.ack(BasicAckOptions::default()).await?;
            tracing::warn!(consumer = handler.name(), error = %e, "malformed message sent to the DLQ");
            return Ok(());
        }
    };
    let span = tracing::info_span!("message", consumer = handler.name(), message_id = %message.id, topic = %message.topic, request_id = message.request_id.as_deref().unwrap_or(""));
    // Instrumented, never `span.enter()` across awaits: on the multi-threaded runtime an
    // entered guard that migrates between threads corrupts the span registry (a panic).
    handle(state, channel, names, handler, delivery, message)
        .instrument(span)
        .await
}

async fn handle(
    state: &QueueContext,
    channel: &Channel,
    names: &Names,
    handler: &dyn Handler,
    delivery: &lapin::message::Delivery,
    message: Message,
) -> anyhow::Result<()> {
    let mut tx = state.db.begin().await?;
    let fresh = sqlx::query!(
        "insert into inbox (consumer, message_id) values ($1, $2) on conflict do nothing",
        handler.name(),
        message.id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        tx.rollback().await?;
        delivery.ack(BasicAckOptions::default()).await?;
        tracing::info!("duplicate delivery absorbed");
        return Ok(());
    }
    match handler.handle(&mut tx, &message).await {
        Ok(()) => {
            tx.commit().await?;
            handler.committed(&message).await;
            delivery.ack(BasicAckOptions::default()).await?;
        }
        Err(HandlerError::Transient(e)) if (message.attempt as usize) < RETRY_TIERS.len() => {
            tx.rollback().await?;
            let delay = retry_delay(message.attempt, &e);
            tracing::info!(attempt = message.attempt + 1, delay_secs = delay, error = %format!("{e:#}"), "retrying later");
            republish(
                channel,
                "",
                &names.retry(handler.name(), delay),
                delivery,
                message.attempt + 1,
                None,
            )
            .await?;
            delivery.ack(BasicAckOptions::default()).await?;
        }
        Err(HandlerError::Transient(e)) | Err(HandlerError::Permanent(e)) => {
            tx.rollback().await?;
            let error: String = format!("{e:#}").chars().take(300).collect();
            let mut tx = state.db.begin().await?;
            handler.exhausted(&mut tx, &message, &error).await?;
            tx.commit().await?;
            republish(
                channel,
                &names.dlx(),
                handler.name(),
                delivery,
                message.attempt,
                Some(&error),
            )
            .await?;
            delivery.ack(BasicAckOptions::default()).await?;
            tracing::warn!(error = %error, "message sent to the DLQ");
        }
    }
    Ok(())
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn a_retry_waits_its_tier_or_at_least_what_the_other_side_asked() {
        let plain = anyhow::anyhow!("HTTP 503");
        assert_eq!(retry_delay(0, &plain), 1);
        assert_eq!(retry_delay(3, &plain), 8);
        let asked =
            |secs| anyhow::anyhow!("HTTP 429").context(RetryAfter(Duration::from_secs(secs)));
        assert_eq!(retry_delay(0, &asked(3)), 4, "the smallest tier ≥ 3 s");
        assert_eq!(
            retry_delay(4, &asked(3)),
            16,
            "never shorter than the attempt's tier"
        );
        assert_eq!(
            retry_delay(0, &asked(3600)),
            30,
            "capped at the longest tier"
        );
    }
}
