//! The events: what happened, as the outbox records it and the queue carries it, and which
//! consumer subscribes to what. Below the aggregates, so an operation, the outbox relay
//! (which declares every consumer's queue before it publishes: an event emitted before its
//! consumer first started is queued rather than dropped as unroutable), the consumer
//! framework and the readiness report all share one list without reaching up into a worker.
//!
//! An event's payload carries ids and states only, never PII (docs/security.md): every
//! field is below.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::{DocType, DocumentState, LoanStatus};

/// Every event, one variant per topic; `topic()` names it on the wire and `payload()` is
/// the JSON the outbox stores. The consumer framework decodes a delivery into one
/// (`queue::consumer::Message::event`), so workers match on variants, never on strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "topic", content = "payload")]
pub enum Event {
    #[serde(rename = "lead.created", rename_all = "camelCase")]
    LeadCreated { lead_id: Uuid },
    #[serde(rename = "credit.requested", rename_all = "camelCase")]
    CreditRequested {
        credit_report_id: Uuid,
        lead_id: Uuid,
    },
    #[serde(rename = "credit.completed", rename_all = "camelCase")]
    CreditCompleted {
        credit_report_id: Uuid,
        lead_id: Uuid,
    },
    #[serde(rename = "credit.failed", rename_all = "camelCase")]
    CreditFailed {
        credit_report_id: Uuid,
        lead_id: Uuid,
        /// A failure code (`bureau_refused`, `subject_incomplete`, …), never bureau text.
        reason: String,
    },
    /// A file arrived in quarantine (or the reconciler found one whose processing was lost).
    #[serde(rename = "doc.uploaded", rename_all = "camelCase")]
    DocUploaded { document_id: Uuid, loan_id: Uuid },
    /// The pipeline decided: the document is readable.
    #[serde(rename = "doc.available", rename_all = "camelCase")]
    DocAvailable {
        document_id: Uuid,
        loan_id: Uuid,
        state: DocumentState,
        reason: Option<String>,
    },
    /// The pipeline decided: the file was refused (malware, type, size, duplicate).
    #[serde(rename = "doc.rejected", rename_all = "camelCase")]
    DocRejected {
        document_id: Uuid,
        loan_id: Uuid,
        state: DocumentState,
        reason: Option<String>,
    },
    /// An agent accepted or rejected a document.
    #[serde(rename = "doc.reviewed", rename_all = "camelCase")]
    DocReviewed {
        document_id: Uuid,
        loan_id: Uuid,
        /// `accept` or `reject`.
        decision: String,
        /// The needs-list request the document answers, if any.
        request_id: Option<Uuid>,
    },
    #[serde(rename = "document_request.created", rename_all = "camelCase")]
    DocumentRequestCreated {
        request_id: Uuid,
        loan_id: Uuid,
        doc_type: DocType,
    },
    #[serde(rename = "document_request.not_applicable", rename_all = "camelCase")]
    DocumentRequestNotApplicable { request_id: Uuid, loan_id: Uuid },
    #[serde(rename = "loan.status.changed", rename_all = "camelCase")]
    LoanStatusChanged {
        loan_id: Uuid,
        old_status: LoanStatus,
        new_status: LoanStatus,
    },
    #[serde(rename = "loan.needs_attention", rename_all = "camelCase")]
    LoanNeedsAttention {
        loan_id: Uuid,
        /// A code with a short technical detail, never borrower data.
        reason: String,
    },
    #[serde(rename = "loan.los_submitted", rename_all = "camelCase")]
    LoanLosSubmitted { loan_id: Uuid, los_loan_id: String },
    /// An agent asked to submit the loan to the LOS again.
    #[serde(rename = "los.submission.requested", rename_all = "camelCase")]
    LosSubmissionRequested { loan_id: Uuid },
    #[serde(rename = "upload_link.created", rename_all = "camelCase")]
    UploadLinkCreated { link_id: Uuid, loan_id: Uuid },
    /// The reminder round found requests of a loan due: one reminder (or digest) to send.
    #[serde(rename = "reminder.due", rename_all = "camelCase")]
    ReminderDue {
        loan_id: Uuid,
        request_ids: Vec<Uuid>,
        /// Which reminder this is for the requests (1 for the first).
        reminder: i32,
    },
    /// A borrower file was disposed (crypto-shredded): every process drops its cached data
    /// key (docs/operations/retention.md).
    #[serde(rename = "file.disposed", rename_all = "camelCase")]
    FileDisposed { lead_id: Uuid },
}

/// The payload format's version, carried beside it (`x-event-version`). A change that an
/// older consumer could misread gets a new version; a consumer leaves an event whose
/// version it does not know undecoded (its handler dead-letters it) rather than guess.
pub const EVENT_VERSION: u32 = 1;

impl Event {
    pub const LEAD_CREATED: &'static str = "lead.created";
    pub const CREDIT_REQUESTED: &'static str = "credit.requested";
    pub const CREDIT_COMPLETED: &'static str = "credit.completed";
    pub const CREDIT_FAILED: &'static str = "credit.failed";
    pub const DOC_UPLOADED: &'static str = "doc.uploaded";
    pub const DOC_AVAILABLE: &'static str = "doc.available";
    pub const DOC_REJECTED: &'static str = "doc.rejected";
    pub const DOC_REVIEWED: &'static str = "doc.reviewed";
    pub const DOCUMENT_REQUEST_CREATED: &'static str = "document_request.created";
    pub const DOCUMENT_REQUEST_NOT_APPLICABLE: &'static str = "document_request.not_applicable";
    pub const LOAN_STATUS_CHANGED: &'static str = "loan.status.changed";
    pub const LOAN_NEEDS_ATTENTION: &'static str = "loan.needs_attention";
    pub const LOAN_LOS_SUBMITTED: &'static str = "loan.los_submitted";
    pub const LOS_SUBMISSION_REQUESTED: &'static str = "los.submission.requested";
    pub const UPLOAD_LINK_CREATED: &'static str = "upload_link.created";
    pub const REMINDER_DUE: &'static str = "reminder.due";
    pub const FILE_DISPOSED: &'static str = "file.disposed";

    /// The routing key it is published under (the serde tag above; a unit test holds the
    /// two equal).
    pub fn topic(&self) -> &'static str {
        match self {
            Event::LeadCreated { .. } => Self::LEAD_CREATED,
            Event::CreditRequested { .. } => Self::CREDIT_REQUESTED,
            Event::CreditCompleted { .. } => Self::CREDIT_COMPLETED,
            Event::CreditFailed { .. } => Self::CREDIT_FAILED,
            Event::DocUploaded { .. } => Self::DOC_UPLOADED,
            Event::DocAvailable { .. } => Self::DOC_AVAILABLE,
            Event::DocRejected { .. } => Self::DOC_REJECTED,
            Event::DocReviewed { .. } => Self::DOC_REVIEWED,
            Event::DocumentRequestCreated { .. } => Self::DOCUMENT_REQUEST_CREATED,
            Event::DocumentRequestNotApplicable { .. } => Self::DOCUMENT_REQUEST_NOT_APPLICABLE,
            Event::LoanStatusChanged { .. } => Self::LOAN_STATUS_CHANGED,
            Event::LoanNeedsAttention { .. } => Self::LOAN_NEEDS_ATTENTION,
            Event::LoanLosSubmitted { .. } => Self::LOAN_LOS_SUBMITTED,
            Event::LosSubmissionRequested { .. } => Self::LOS_SUBMISSION_REQUESTED,
            Event::UploadLinkCreated { .. } => Self::UPLOAD_LINK_CREATED,
            Event::ReminderDue { .. } => Self::REMINDER_DUE,
            Event::FileDisposed { .. } => Self::FILE_DISPOSED,
        }
    }

    /// The JSON the outbox stores and the queue carries.
    pub fn payload(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut tagged)) => tagged.remove("payload").unwrap_or(Value::Null),
            // Every variant is a struct of ids, strings and states: it always serializes.
            _ => Value::Null,
        }
    }

    /// The event a delivery carries; `None` for a topic or version this build does not
    /// know, or a payload that is not that topic's.
    pub fn decode(topic: &str, version: u32, payload: &Value) -> Option<Event> {
        if version != EVENT_VERSION {
            return None;
        }
        serde_json::from_value(serde_json::json!({ "topic": topic, "payload": payload })).ok()
    }

    /// The loan it is about, for the events that name one.
    pub fn loan_id(&self) -> Option<Uuid> {
        match self {
            Event::DocUploaded { loan_id, .. }
            | Event::DocAvailable { loan_id, .. }
            | Event::DocRejected { loan_id, .. }
            | Event::DocReviewed { loan_id, .. }
            | Event::DocumentRequestCreated { loan_id, .. }
            | Event::DocumentRequestNotApplicable { loan_id, .. }
            | Event::LoanStatusChanged { loan_id, .. }
            | Event::LoanNeedsAttention { loan_id, .. }
            | Event::LoanLosSubmitted { loan_id, .. }
            | Event::LosSubmissionRequested { loan_id }
            | Event::UploadLinkCreated { loan_id, .. }
            | Event::ReminderDue { loan_id, .. } => Some(*loan_id),
            Event::LeadCreated { .. }
            | Event::CreditRequested { .. }
            | Event::CreditCompleted { .. }
            | Event::CreditFailed { .. }
            | Event::FileDisposed { .. } => None,
        }
    }
}

pub const DOCUMENT_PIPELINE: &str = "document-pipeline";
pub const DOCUMENT_PIPELINE_TOPICS: &[&str] = &[Event::DOC_UPLOADED];

pub const CREDIT_WORKER: &str = "credit-worker";
pub const CREDIT_WORKER_TOPICS: &[&str] = &[Event::CREDIT_REQUESTED];

pub const LOS_SUBMITTER: &str = "los-submitter";
pub const LOS_SUBMITTER_TOPICS: &[&str] =
    &[Event::LOAN_STATUS_CHANGED, Event::LOS_SUBMISSION_REQUESTED];

pub const NOTIFIER: &str = "notifier";
pub const NOTIFIER_TOPICS: &[&str] = &[
    Event::UPLOAD_LINK_CREATED,
    Event::DOC_AVAILABLE,
    Event::DOC_REJECTED,
    Event::DOC_REVIEWED,
    Event::LOAN_STATUS_CHANGED,
    Event::CREDIT_COMPLETED,
    Event::CREDIT_FAILED,
    Event::LOAN_NEEDS_ATTENTION,
    Event::REMINDER_DUE,
];

/// Every production consumer and the topics it subscribes to.
pub const SUBSCRIPTIONS: &[(&str, &[&str])] = &[
    (DOCUMENT_PIPELINE, DOCUMENT_PIPELINE_TOPICS),
    (CREDIT_WORKER, CREDIT_WORKER_TOPICS),
    (LOS_SUBMITTER, LOS_SUBMITTER_TOPICS),
    (NOTIFIER, NOTIFIER_TOPICS),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn one_of_each() -> Vec<Event> {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        vec![
            Event::LeadCreated { lead_id: a },
            Event::CreditRequested {
                credit_report_id: a,
                lead_id: b,
            },
            Event::CreditCompleted {
                credit_report_id: a,
                lead_id: b,
            },
            Event::CreditFailed {
                credit_report_id: a,
                lead_id: b,
                reason: "bureau_refused".into(),
            },
            Event::DocUploaded {
                document_id: a,
                loan_id: b,
            },
            Event::DocAvailable {
                document_id: a,
                loan_id: b,
                state: DocumentState::Available,
                reason: None,
            },
            Event::DocRejected {
                document_id: a,
                loan_id: b,
                state: DocumentState::Rejected,
                reason: Some("malware".into()),
            },
            Event::DocReviewed {
                document_id: a,
                loan_id: b,
                decision: "reject".into(),
                request_id: None,
            },
            Event::DocumentRequestCreated {
                request_id: a,
                loan_id: b,
                doc_type: DocType::W2,
            },
            Event::DocumentRequestNotApplicable {
                request_id: a,
                loan_id: b,
            },
            Event::LoanStatusChanged {
                loan_id: a,
                old_status: LoanStatus::Draft,
                new_status: LoanStatus::Submitted,
            },
            Event::LoanNeedsAttention {
                loan_id: a,
                reason: "los_submission_failed".into(),
            },
            Event::LoanLosSubmitted {
                loan_id: a,
                los_loan_id: "LOS-1".into(),
            },
            Event::LosSubmissionRequested { loan_id: a },
            Event::UploadLinkCreated {
                link_id: a,
                loan_id: b,
            },
            Event::ReminderDue {
                loan_id: a,
                request_ids: vec![b],
                reminder: 2,
            },
            Event::FileDisposed { lead_id: a },
        ]
    }

    #[test]
    fn every_event_round_trips_under_its_topic() {
        let events = one_of_each();
        let mut topics: Vec<&str> = events.iter().map(Event::topic).collect();
        for event in &events {
            // The serde tag and topic() agree, and decoding the stored form gives it back.
            let tagged = serde_json::to_value(event).unwrap();
            assert_eq!(tagged["topic"], event.topic());
            let back = Event::decode(event.topic(), EVENT_VERSION, &event.payload());
            assert_eq!(back.as_ref(), Some(event));
        }
        topics.sort();
        topics.dedup();
        assert_eq!(topics.len(), events.len(), "one variant per topic");
    }

    #[test]
    fn payloads_keep_the_wire_names_consumers_and_operators_know() {
        let loan = Uuid::now_v7();
        let event = Event::LoanStatusChanged {
            loan_id: loan,
            old_status: LoanStatus::Draft,
            new_status: LoanStatus::Submitted,
        };
        assert_eq!(
            event.payload(),
            serde_json::json!({"loanId": loan, "oldStatus": "draft", "newStatus": "submitted"})
        );
    }

    #[test]
    fn an_unknown_version_topic_or_payload_is_not_decoded() {
        let event = Event::LosSubmissionRequested {
            loan_id: Uuid::now_v7(),
        };
        assert!(Event::decode(event.topic(), EVENT_VERSION + 1, &event.payload()).is_none());
        assert!(Event::decode("no.such.topic", EVENT_VERSION, &event.payload()).is_none());
        assert!(
            Event::decode(Event::LOAN_STATUS_CHANGED, EVENT_VERSION, &event.payload()).is_none()
        );
    }

    #[test]
    fn every_subscribed_topic_is_an_event() {
        let known: Vec<&str> = one_of_each().iter().map(Event::topic).collect();
        for (consumer, topics) in SUBSCRIPTIONS {
            for topic in *topics {
                assert!(
                    known.contains(topic),
                    "{consumer} subscribes to unknown {topic}"
                );
            }
        }
    }
}
