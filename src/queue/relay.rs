//! The outbox relay: publishes outbox rows to `{p}.events` with publisher confirms and
//! `mandatory`, marking a row published only once the broker confirmed it. Woken by
//! LISTEN/NOTIFY, with a polling fallback; `FOR UPDATE SKIP LOCKED` lets every replica run
//! it at once without publishing a row twice in the normal case (a crash between confirm and
//! commit can publish twice; consumers dedupe by message id).

use std::time::Duration;

use anyhow::Context;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation};
use sqlx::postgres::PgListener;

use super::QueueContext;
use super::topology::{self, Names};

const BATCH: i64 = 200;
const POLL: Duration = Duration::from_secs(1);

/// A channel in confirm mode with the exchanges declared, for the relay to keep.
pub async fn open_channel(state: &QueueContext) -> anyhow::Result<Channel> {
    let names = Names {
        prefix: state.settings.rabbitmq.prefix.clone(),
    };
    let channel = state.broker.channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    topology::declare_exchanges(&channel, &names).await?;
    for (consumer, topics) in crate::events::SUBSCRIPTIONS {
        if state.settings.worker.runs(consumer) {
            topology::declare_consumer(&channel, &names, consumer, topics).await?;
        }
    }
    Ok(channel)
}

/// Publish everything pending on `channel`; the number published.
pub async fn publish_pending(state: &QueueContext, channel: &Channel) -> anyhow::Result<u64> {
    let names = Names {
        prefix: state.settings.rabbitmq.prefix.clone(),
    };
    let mut total = 0;
    loop {
        let mut tx = state.db.begin().await?;
        let rows = sqlx::query!(
            "select id, topic, payload, headers from outbox
              where published_at is null
              order by created_at, id
              limit $1
              for update skip locked",
            BATCH
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            break;
        }
        let mut confirms = Vec::with_capacity(rows.len());
        for row in &rows {
            let (id, topic, payload, headers) = (&row.id, &row.topic, &row.payload, &row.headers);
            let mut amqp_headers = FieldTable::default();
            if let Some(request_id) = headers.get("request_id").and_then(|v| v.as_str()) {
                amqp_headers.insert(
                    "x-request-id".into(),
                    AMQPValue::LongString(request_id.into()),
                );
            }
            // Rows written before events carried a version are version 1.
            let version = headers.get("version").and_then(|v| v.as_u64()).unwrap_or(1);
            amqp_headers.insert(
                "x-event-version".into(),
                AMQPValue::LongInt(i32::try_from(version).unwrap_or(i32::MAX)),
            );
            let properties = BasicProperties::default()
                .with_message_id(id.to_string().as_str().into())
                .with_type(topic.as_str().into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_headers(amqp_headers);
            let confirm = channel
                .basic_publish(
                    names.events().as_str().into(),
                    topic.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &serde_json::to_vec(payload)?,
                    properties,
                )
                .await
                .context("publishing an event")?;
            confirms.push((*id, confirm));
        }
        let mut published = Vec::with_capacity(confirms.len());
        for (id, confirm) in confirms {
            match confirm.await.context("waiting for a publisher confirm")? {
                Confirmation::Ack(returned) => {
                    if returned.is_some() {
                        // No queue is bound for this topic (yet): nothing to deliver to.
                        tracing::debug!(message_id = %id, "event had no subscriber");
                    }
                    published.push(id);
                }
                Confirmation::Nack(_) => anyhow::bail!("the broker refused an event"),
                Confirmation::NotRequested => anyhow::bail!("publisher confirms are off"),
            }
        }
        sqlx::query!(
            "update outbox set published_at = now() where id = any($1)",
            &published
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        total += published.len() as u64;
    }
    Ok(total)
}

/// Run the relay until the task is dropped.
pub async fn run(state: impl Into<QueueContext>) {
    let state: QueueContext = state.into();
    let mut listener = match PgListener::connect_with(&state.db).await {
        Ok(mut l) => match l.listen("loanfolio_outbox").await {
            Ok(()) => Some(l),
            Err(_) => None,
        },
        Err(_) => None,
    };
    let mut backoff = Duration::from_millis(250);
    // One channel for as long as it works: a channel per round would exhaust the
    // connection's channel limit within the hour.
    let mut channel: Option<Channel> = None;
    loop {
        let round = async {
            let current = match channel.take() {
                Some(c) if c.status().connected() => c,
                _ => open_channel(&state).await?,
            };
            let result = publish_pending(&state, &current).await;
            channel = Some(current);
            result
        };
        match round.await {
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(published = n, "outbox relayed");
                }
                backoff = Duration::from_millis(250);
            }
            Err(e) => {
                if let Some(c) = channel.take() {
                    let _ = c.close(200, "relay error".into()).await;
                }
                tracing::warn!(error = %format!("{e:#}"), "outbox relay: will retry");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        }
        match listener.as_mut() {
            Some(l) => {
                // Woken by a commit that wrote outbox rows, or the poll interval.
                if let Ok(Err(_)) = tokio::time::timeout(POLL, l.recv()).await {
                    listener = None;
                }
            }
            None => {
                tokio::time::sleep(POLL).await;
                if let Ok(mut l) = PgListener::connect_with(&state.db).await
                    && l.listen("loanfolio_outbox").await.is_ok()
                {
                    listener = Some(l);
                }
            }
        }
    }
}
