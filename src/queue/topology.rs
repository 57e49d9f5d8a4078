//! The broker topology (docs/architecture.md), declared idempotently at start by every role:
//!
//! - `{p}.events`: the topic exchange the outbox relay publishes to;
//! - per consumer `c`: a durable quorum queue `{p}.{c}` bound to its topics, with an explicit
//!   delivery limit and `{p}.dlx` as dead-letter exchange (poison messages that keep
//!   failing delivery end there by the broker's own count);
//! - `{p}.{c}.dlq`: its dead-letter queue;
//! - `{p}.{c}.retry.{n}s`: fixed-delay retry queues, one per tier, with a queue-level TTL
//!   that dead-letters back into `{p}.{c}` through the default exchange. Queue-level TTL
//!   never stalls behind a longer-lived head message, as per-message TTL would.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

/// Retry delays by attempt (seconds).
pub const RETRY_TIERS: [u32; 6] = [1, 2, 4, 8, 16, 30];
/// How often the broker redelivers a message a consumer keeps failing on (crash, nack).
pub const DELIVERY_LIMIT: i32 = 5;

pub struct Names {
    pub prefix: String,
}

impl Names {
    pub fn events(&self) -> String {
        format!("{}.events", self.prefix)
    }
    pub fn dlx(&self) -> String {
        format!("{}.dlx", self.prefix)
    }
    pub fn queue(&self, consumer: &str) -> String {
        format!("{}.{consumer}", self.prefix)
    }
    pub fn dlq(&self, consumer: &str) -> String {
        format!("{}.{consumer}.dlq", self.prefix)
    }
    pub fn retry(&self, consumer: &str, delay_secs: u32) -> String {
        format!("{}.{consumer}.retry.{delay_secs}s", self.prefix)
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

pub async fn declare_exchanges(channel: &Channel, names: &Names) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            names.events().as_str().into(),
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            names.dlx().as_str().into(),
            ExchangeKind::Direct,
            options,
            FieldTable::default(),
        )
        .await
}

/// Declare one consumer's queues and bindings.
pub async fn declare_consumer(
    channel: &Channel,
    names: &Names,
    consumer: &str,
    topics: &[&str],
) -> lapin::Result<()> {
    declare_exchanges(channel, names).await?;
    let queue = names.queue(consumer);
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(DELIVERY_LIMIT),
    );
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(names.dlx().into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(consumer.into()),
    );
    channel
        .queue_declare(queue.as_str().into(), durable(), arguments)
        .await?;
    for topic in topics {
        channel
            .queue_bind(
                queue.as_str().into(),
                names.events().as_str().into(),
                (*topic).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let mut dlq_arguments = FieldTable::default();
    dlq_arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            names.dlq(consumer).as_str().into(),
            durable(),
            dlq_arguments,
        )
        .await?;
    channel
        .queue_bind(
            names.dlq(consumer).as_str().into(),
            names.dlx().as_str().into(),
            consumer.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for delay in RETRY_TIERS {
        let mut retry_arguments = FieldTable::default();
        retry_arguments.insert(
            "x-message-ttl".into(),
            AMQPValue::LongInt((delay * 1000) as i32),
        );
        retry_arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        retry_arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(queue.as_str().into()),
        );
        channel
            .queue_declare(
                names.retry(consumer, delay).as_str().into(),
                durable(),
                retry_arguments,
            )
            .await?;
    }
    Ok(())
}
