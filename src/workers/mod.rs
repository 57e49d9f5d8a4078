//! Background workers run by `worker` (and `serve` unless `--no-workers`).

pub mod credit;
pub mod los;
pub mod notifier;
pub mod pipeline;
pub mod reconciler;
pub mod reminders;

/// Every production consumer and the topics it subscribes to. The relay declares these
/// queues before it publishes, so an event emitted before its consumer first started (a new
/// installation, a new prefix) is queued rather than dropped as unroutable.
pub const SUBSCRIPTIONS: &[(&str, &[&str])] = &[
    (pipeline::CONSUMER, pipeline::TOPICS),
    (credit::CONSUMER, credit::TOPICS),
    (los::CONSUMER, los::TOPICS),
    (notifier::CONSUMER, notifier::TOPICS),
];
