//! Dead-letter queues: look at them and re-drive them (`loanfolio admin dlq list|replay`).

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};

use super::Broker;
use super::topology::Names;

#[derive(Debug)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub topic: Option<String>,
    pub error: Option<String>,
}

/// How many messages wait in `consumer`'s dead-letter queue (an error when it does not
/// exist yet: the consumer never ran on this prefix).
pub async fn depth(broker: &Broker, prefix: &str, consumer: &str) -> anyhow::Result<u32> {
    let names = Names {
        prefix: prefix.to_owned(),
    };
    let channel = broker.channel().await?;
    let count = channel
        .queue_declare(
            names.dlq(consumer).as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count();
    let _ = channel.close(200, "done".into()).await;
    Ok(count)
}

/// The dead letters of `consumer` (left in place).
pub async fn list(
    broker: &Broker,
    prefix: &str,
    consumer: &str,
) -> anyhow::Result<Vec<DeadLetter>> {
    let names = Names {
        prefix: prefix.to_owned(),
    };
    let channel = broker.channel().await?;
    let queue = names.dlq(consumer);
    let count = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count();
    let mut letters = Vec::new();
    let mut tags = Vec::new();
    for _ in 0..count {
        let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await?
        else {
            break;
        };
        let properties = &message.delivery.properties;
        let error = properties.headers().as_ref().and_then(|h| {
            h.inner().iter().find_map(|(k, v)| match (k.as_str(), v) {
                ("x-error", AMQPValue::LongString(s)) => Some(s.to_string()),
                _ => None,
            })
        });
        letters.push(DeadLetter {
            message_id: properties.message_id().as_ref().map(|m| m.to_string()),
            topic: properties.kind().as_ref().map(|k| k.to_string()),
            error,
        });
        tags.push(message.delivery.delivery_tag);
    }
    // Put them all back, in order, once every one has been seen.
    for tag in tags {
        channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                },
            )
            .await?;
    }
    let _ = channel.close(200, "dlq list".into()).await;
    Ok(letters)
}

/// Move every dead letter of `consumer` back to its queue with a fresh attempt count.
pub async fn replay(broker: &Broker, prefix: &str, consumer: &str) -> anyhow::Result<u64> {
    let names = Names {
        prefix: prefix.to_owned(),
    };
    let channel = broker.channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut moved = 0;
    while let Some(message) = channel
        .basic_get(
            names.dlq(consumer).as_str().into(),
            BasicGetOptions::default(),
        )
        .await?
    {
        let delivery = &message.delivery;
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert("x-attempt".into(), AMQPValue::LongInt(0));
        let properties = delivery.properties.clone().with_headers(headers);
        let confirm = channel
            .basic_publish(
                "".into(),
                names.queue(consumer).as_str().into(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await?
            .await?;
        anyhow::ensure!(
            matches!(confirm, lapin::Confirmation::Ack(_)),
            "the broker refused a replayed message"
        );
        delivery.ack(BasicAckOptions::default()).await?;
        moved += 1;
    }
    let _ = channel.close(200, "dlq replay".into()).await;
    Ok(moved)
}
