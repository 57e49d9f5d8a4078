//! The notification worker (issue 7): reacts to events from the outbox and emails borrowers
//! and agents. One notification row per event, recipient and channel (unique), written and
//! updated outside the message's transaction, so a redelivered event or a retry after a
//! transient SMTP failure never sends a message twice. Messages carry names and links only.

use futures::future::BoxFuture;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{NotificationState, store};
use crate::crypto::field::{self, Location};
use crate::events::Event;
use crate::mail::SendError;
use crate::queue::consumer::{Handler, HandlerError, Message};
use crate::state::AppState;

pub use crate::events::{NOTIFIER as CONSUMER, NOTIFIER_TOPICS as TOPICS};

/// How `last_error` starts when the queue's retries ran out (a DLQ replay retries these).
const EXHAUSTED: &str = "retries exhausted";

pub struct Notifier {
    pub(super) state: AppState,
    pub(super) http: reqwest::Client,
}

impl Notifier {
    pub fn new(state: AppState) -> Self {
        let timeout = std::time::Duration::from_secs(state.settings.notifications.sms.timeout_secs);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Self { state, http }
    }
}

pub(super) fn transient(e: impl Into<anyhow::Error>) -> HandlerError {
    HandlerError::Transient(e.into())
}

pub(super) fn decrypt(
    key: &[u8; 32],
    table: &'static str,
    column: &'static str,
    row: Uuid,
    sealed: &[u8],
) -> Result<String, HandlerError> {
    let plain = field::decrypt(key, Location { table, column, row }, sealed).map_err(|e| {
        HandlerError::Permanent(anyhow::anyhow!("decrypting {table}.{column}: {e}"))
    })?;
    Ok(String::from_utf8_lossy(&plain).into_owned())
}

/// One message to send.
pub(super) struct Outgoing {
    pub(super) kind: &'static str,
    /// `email`, or `sms` (the body is then `subject`).
    pub(super) channel: &'static str,
    pub(super) to: String,
    pub(super) template: &'static str,
    pub(super) subject: String,
    pub(super) context: Value,
    /// Not transactional (a reminder): carries a one-click unsubscribe link.
    pub(super) unsubscribe: bool,
}

impl Notifier {
    /// The messages an event asks for, with the loan and lead they are about.
    async fn plan(
        &self,
        message: &Message,
    ) -> Result<Option<(Uuid, Uuid, Vec<Outgoing>)>, HandlerError> {
        let state = &self.state;
        let (lender, phone) = self.branding();
        let event = message.event()?;
        let loan = match event {
            Event::CreditCompleted { lead_id, .. } | Event::CreditFailed { lead_id, .. } => {
                // A pull belongs to a lead; tell the agent about the lead's newest loan, if any.
                store::newest_loan_of_lead(&state.db, *lead_id)
                    .await
                    .map_err(transient)?
            }
            _ => event.loan_id(),
        };
        let Some(loan) = loan else { return Ok(None) };
        let Some(store::LoanPeople {
            lead_id: lead,
            first_name,
            email_enc,
            agent_name: agent,
            agent_email,
        }) = self.people(loan).await?
        else {
            return Ok(None);
        };
        let key = state
            .keys
            .file_key(&state.db, lead)
            .await
            .map_err(transient)?;
        let borrower_email = match &email_enc {
            Some(sealed) => Some(decrypt(&key, "leads", "email_enc", lead, sealed)?),
            None => None,
        };
        let agent_update = |headline: String| {
            agent_email.clone().map(|to| Outgoing {
                kind: "agent",
                channel: "email",
                to,
                template: "agent_update",
                subject: headline.clone(),
                context: json!({"headline": headline, "borrower": first_name, "loan_id": loan, "lender": lender}),
                unsubscribe: false,
            })
        };
        let mut out = Vec::new();
        match event {
            &Event::UploadLinkCreated { link_id: link, .. } => {
                let row = store::link_invitation(&state.db, link)
                    .await
                    .map_err(transient)?;
                if let Some(store::LinkInvitation {
                    borrower_email_enc: Some(email),
                    token_enc: Some(token),
                    expires_at: expires,
                }) = row
                {
                    let to = decrypt(&key, "upload_links", "borrower_email_enc", link, &email)?;
                    let token = decrypt(&key, "upload_links", "token_enc", link, &token)?;
                    out.push(Outgoing {
                        kind: "borrower",
                        channel: "email",
                        to,
                        template: "link_invitation",
                        subject: format!("{lender}: please upload your documents"),
                        context: json!({"first_name": first_name, "agent": agent, "lender": lender,
                            "support_phone": phone, "link": self.url(&token),
                            "expires": expires.date().to_string()}),
                        unsubscribe: false,
                    });
                }
            }
            Event::DocReviewed {
                document_id: document,
                decision,
                ..
            } if decision == "reject" => {
                let document = *document;
                let row = store::rejected_document(&state.db, document)
                    .await
                    .map_err(transient)?;
                if let Some(store::RejectedDocument {
                    doc_type,
                    review_reason_enc: Some(sealed),
                    upload_link_id: link,
                }) = row
                    && let Some((to, link)) = self
                        .rejection_recipient(&key, loan, link, borrower_email.clone())
                        .await?
                {
                    let reason =
                        decrypt(&key, "documents", "review_reason_enc", document, &sealed)?;
                    out.push(Outgoing {
                        kind: "borrower",
                        channel: "email",
                        to,
                        template: "document_rejected",
                        subject: format!("{lender}: a document needs to be replaced"),
                        context: json!({"first_name": first_name, "agent": agent, "lender": lender,
                            "support_phone": phone, "doc_type": doc_type.replace('_', " "), "reason": reason,
                            "link": link}),
                        unsubscribe: false,
                    });
                }
            }
            Event::LoanStatusChanged { new_status, .. } => {
                let status = new_status.as_str();
                if let Some(to) = borrower_email.clone() {
                    out.push(Outgoing {
                        kind: "borrower",
                        channel: "email",
                        to,
                        template: "status_borrower",
                        subject: format!("{lender}: your application is {status}"),
                        context: json!({"first_name": first_name, "status": status, "lender": lender, "support_phone": phone}),
                        unsubscribe: false,
                    });
                }
                if let Some(to) = self.sms_number(&key, lead).await? {
                    out.push(Outgoing {
                        kind: "borrower",
                        channel: "sms",
                        to,
                        template: "status_sms",
                        subject: format!(
                            "{lender}: your loan application is now {status}. Questions? {phone}"
                        ),
                        context: Value::Null,
                        unsubscribe: false,
                    });
                }
                out.extend(agent_update(format!("Loan status: {status}")));
            }
            Event::ReminderDue { request_ids, .. } => {
                out.extend(
                    self.reminder(request_ids, &key, (loan, lead), &first_name, &agent)
                        .await?,
                );
            }
            Event::DocAvailable { .. } => {
                out.extend(agent_update("A document was received".into()))
            }
            Event::DocRejected { .. } => {
                out.extend(agent_update("A document was rejected by the checks".into()))
            }
            Event::CreditCompleted { .. } => {
                out.extend(agent_update("A credit report is ready".into()))
            }
            Event::CreditFailed { .. } => out.extend(agent_update("A credit pull failed".into())),
            Event::LoanNeedsAttention { .. } => {
                out.extend(agent_update("A loan needs your attention".into()))
            }
            _ => {}
        }
        Ok(Some((loan, lead, out)))
    }

    async fn deliver(
        &self,
        message: &Message,
        loan: Uuid,
        lead: Uuid,
        o: Outgoing,
    ) -> Result<(), HandlerError> {
        let state = &self.state;
        let key = state
            .keys
            .file_key(&state.db, lead)
            .await
            .map_err(transient)?;
        let id = Uuid::now_v7();
        let sealed = field::encrypt(
            &key,
            Location {
                table: "notifications",
                column: "recipient_enc",
                row: id,
            },
            o.to.as_bytes(),
        );
        let store::Recorded {
            id,
            state: current,
            last_error,
        } = store::record_once(
            &state.db,
            &store::NewNotification {
                id,
                source_message_id: message.id,
                recipient_kind: o.kind,
                channel: o.channel,
                template: o.template,
                loan,
                lead,
                recipient_enc: &sealed,
            },
        )
        .await
        .map_err(transient)?;
        // A message that ran out of retries reaches a handler again only by an operator's
        // `admin dlq replay` (it never entered the inbox): that is a request to try again.
        let replayed = current == NotificationState::Failed
            && last_error
                .as_deref()
                .is_some_and(|e| e.starts_with(EXHAUSTED));
        if replayed {
            store::requeue(&state.db, id).await.map_err(transient)?;
        } else if current != NotificationState::Queued {
            return Ok(()); // sent, or refused for good, on an earlier delivery
        }
        let sent = if o.channel == "sms" {
            self.send_sms(&o.to, &o.subject).await
        } else {
            let mut context = o.context;
            let unsubscribe = if o.unsubscribe {
                let url = self.unsubscribe_url(lead).await?;
                context["unsubscribe"] = Value::String(url.clone());
                Some(url)
            } else {
                None
            };
            let body = state
                .mailer
                .templates
                .render(o.template, &context)
                .map_err(HandlerError::Permanent)?;
            state
                .mailer
                .send(id, &o.to, &o.subject, body, unsubscribe.as_deref())
                .await
        };
        match sent {
            Ok(provider_id) => {
                store::sent(&state.db, id, &provider_id)
                    .await
                    .map_err(transient)?;
                Ok(())
            }
            Err(SendError::Permanent(reason)) => {
                store::refused(&state.db, id, &reason)
                    .await
                    .map_err(transient)?;
                Ok(())
            }
            Err(SendError::Transient(reason)) => {
                store::attempt_failed(&state.db, id, &reason)
                    .await
                    .map_err(transient)?;
                Err(HandlerError::Transient(anyhow::anyhow!("{reason}")))
            }
        }
    }
}

impl Handler for Notifier {
    fn name(&self) -> &str {
        CONSUMER
    }

    fn topics(&self) -> Vec<String> {
        TOPICS.iter().map(|t| (*t).to_owned()).collect()
    }

    fn handle<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let Some((loan, lead, messages)) = self.plan(message).await? else {
                return Ok(());
            };
            let mut retry = None;
            for outgoing in messages {
                // Every recipient gets its chance before a transient failure retries the event.
                if let Err(e) = self.deliver(message, loan, lead, outgoing).await {
                    match e {
                        HandlerError::Transient(_) => retry = Some(e),
                        permanent => return Err(permanent),
                    }
                }
            }
            retry.map_or(Ok(()), Err)
        })
    }

    fn exhausted<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        message: &'a Message,
        error: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let reason = format!(
                "{EXHAUSTED}: {}",
                error.chars().take(100).collect::<String>()
            );
            store::exhausted(&mut *tx, message.id, &reason).await?;
            Ok(())
        })
    }
}
