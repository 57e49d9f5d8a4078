//! The queue's consumers and the topics each subscribes to. Below the aggregates, so the
//! outbox relay (which declares every consumer's queue before it publishes: an event emitted
//! before its consumer first started is queued rather than dropped as unroutable) and the
//! readiness report need not reach up into the workers that consume them.

pub const DOCUMENT_PIPELINE: &str = "document-pipeline";
pub const DOCUMENT_PIPELINE_TOPICS: &[&str] = &["doc.uploaded"];

pub const CREDIT_WORKER: &str = "credit-worker";
pub const CREDIT_WORKER_TOPICS: &[&str] = &["credit.requested"];

pub const LOS_SUBMITTER: &str = "los-submitter";
pub const LOS_SUBMITTER_TOPICS: &[&str] = &["loan.status.changed", "los.submission.requested"];

/// Published by the reminder scheduler, consumed by the notifier.
pub const REMINDER_DUE: &str = "reminder.due";

pub const NOTIFIER: &str = "notifier";
pub const NOTIFIER_TOPICS: &[&str] = &[
    "upload_link.created",
    "doc.available",
    "doc.rejected",
    "doc.reviewed",
    "loan.status.changed",
    "credit.completed",
    "credit.failed",
    "loan.needs_attention",
    REMINDER_DUE,
];

/// Every production consumer and the topics it subscribes to.
pub const SUBSCRIPTIONS: &[(&str, &[&str])] = &[
    (DOCUMENT_PIPELINE, DOCUMENT_PIPELINE_TOPICS),
    (CREDIT_WORKER, CREDIT_WORKER_TOPICS),
    (LOS_SUBMITTER, LOS_SUBMITTER_TOPICS),
    (NOTIFIER, NOTIFIER_TOPICS),
];
