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
use crate::domain::Language;
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
    /// The borrower's language (the link's; agents read English).
    pub(super) language: Language,
}

/// Who an event's messages go to and what they say about whom: the loan's borrower and
/// agent, the file's key, and the lender's branding.
pub(super) struct Audience {
    pub(super) loan: Uuid,
    pub(super) lead: Uuid,
    pub(super) key: std::sync::Arc<crate::crypto::DataKey>,
    pub(super) first_name: String,
    pub(super) borrower_email: Option<String>,
    pub(super) agent: String,
    pub(super) agent_email: Option<String>,
    pub(super) lender: String,
    pub(super) phone: String,
    /// The language of the borrower's newest link that has one (else English).
    pub(super) language: Language,
}

impl Audience {
    /// The agent's short update (`agent_update`), when the agent has an address.
    fn agent_update(&self, headline: &str) -> Option<Outgoing> {
        self.agent_email.clone().map(|to| Outgoing {
            kind: "agent",
            channel: "email",
            to,
            template: "agent_update",
            subject: headline.to_owned(),
            context: json!({"headline": headline, "borrower": self.first_name,
                "loan_id": self.loan, "lender": self.lender}),
            unsubscribe: false,
            language: Language::En,
        })
    }
}

impl Notifier {
    /// The messages an event asks for, with the loan and lead they are about.
    async fn plan(
        &self,
        message: &Message,
    ) -> Result<Option<(Uuid, Uuid, Vec<Outgoing>)>, HandlerError> {
        let event = message.event()?;
        let Some(who) = self.audience(event).await? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        match event {
            &Event::UploadLinkCreated { link_id, .. } => {
                out.extend(self.invitation(&who, link_id).await?);
            }
            Event::DocReviewed {
                document_id,
                decision,
                ..
            } if decision == "reject" => {
                out.extend(self.rejection(&who, *document_id).await?);
            }
            Event::LoanStatusChanged { new_status, .. } => {
                out.extend(self.status_changed(&who, new_status.as_str()).await?);
            }
            Event::ReminderDue { request_ids, .. } => {
                out.extend(self.reminder(request_ids, &who).await?);
            }
            Event::DocAvailable { .. } => out.extend(who.agent_update("A document was received")),
            Event::DocRejected { .. } => {
                out.extend(who.agent_update("A document was rejected by the checks"))
            }
            Event::CreditCompleted { .. } => {
                out.extend(who.agent_update("A credit report is ready"))
            }
            Event::CreditFailed { .. } => out.extend(who.agent_update("A credit pull failed")),
            Event::LoanNeedsAttention { .. } => {
                out.extend(who.agent_update("A loan needs your attention"))
            }
            _ => {}
        }
        Ok(Some((who.loan, who.lead, out)))
    }

    /// The loan an event is about and its people; `None` when there is no such loan.
    async fn audience(&self, event: &Event) -> Result<Option<Audience>, HandlerError> {
        let state = &self.state;
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
        let Some(people) = self.people(loan).await? else {
            return Ok(None);
        };
        let lead = people.lead_id;
        let key = state
            .keys
            .file_key(&state.db, lead)
            .await
            .map_err(HandlerError::of_key)?;
        let borrower_email = match &people.email_enc {
            Some(sealed) => Some(decrypt(&key, "leads", "email_enc", lead, sealed)?),
            None => None,
        };
        let (lender, phone) = self.branding();
        let language = store::borrower_language(&self.state.db, loan)
            .await
            .map_err(transient)?
            .as_deref()
            .and_then(Language::parse)
            .unwrap_or(Language::En);
        Ok(Some(Audience {
            loan,
            lead,
            key,
            first_name: people.first_name,
            borrower_email,
            agent: people.agent_name,
            agent_email: people.agent_email,
            lender,
            phone,
            language,
        }))
    }

    /// A new link's invitation to the address it was made for.
    async fn invitation(
        &self,
        who: &Audience,
        link: Uuid,
    ) -> Result<Option<Outgoing>, HandlerError> {
        let row = store::link_invitation(&self.state.db, link)
            .await
            .map_err(transient)?;
        let Some(store::LinkInvitation {
            borrower_email_enc: Some(email),
            token_enc: Some(token),
            expires_at: expires,
            language,
        }) = row
        else {
            return Ok(None);
        };
        let to = decrypt(&who.key, "upload_links", "borrower_email_enc", link, &email)?;
        let token = decrypt(&who.key, "upload_links", "token_enc", link, &token)?;
        Ok(Some(Outgoing {
            kind: "borrower",
            channel: "email",
            to,
            template: "link_invitation",
            subject: crate::mail::subject(language, "link_invitation", &[("lender", &who.lender)]),
            context: json!({"first_name": who.first_name, "agent": who.agent, "lender": who.lender,
                "support_phone": who.phone, "link": self.url(&token),
                "expires": expires.date().to_string()}),
            unsubscribe: false,
            language,
        }))
    }

    /// An agent's rejection of a document, with its reason and the way back.
    async fn rejection(
        &self,
        who: &Audience,
        document: Uuid,
    ) -> Result<Option<Outgoing>, HandlerError> {
        let row = store::rejected_document(&self.state.db, document)
            .await
            .map_err(transient)?;
        let Some(store::RejectedDocument {
            doc_type,
            review_reason_enc: Some(sealed),
            upload_link_id: link,
        }) = row
        else {
            return Ok(None);
        };
        let Some((to, link)) = self
            .rejection_recipient(&who.key, who.loan, link, who.borrower_email.clone())
            .await?
        else {
            return Ok(None);
        };
        let reason = decrypt(
            &who.key,
            "documents",
            "review_reason_enc",
            document,
            &sealed,
        )?;
        Ok(Some(Outgoing {
            kind: "borrower",
            channel: "email",
            to,
            template: "document_rejected",
            subject: crate::mail::subject(
                who.language,
                "document_rejected",
                &[("lender", &who.lender)],
            ),
            context: json!({"first_name": who.first_name, "agent": who.agent, "lender": who.lender,
                "support_phone": who.phone, "doc_type": doc_type.replace('_', " "), "reason": reason,
                "link": link}),
            unsubscribe: false,
            language: who.language,
        }))
    }

    /// A status change: the borrower by email (and by SMS with an opt-in), the agent.
    async fn status_changed(
        &self,
        who: &Audience,
        status: &str,
    ) -> Result<Vec<Outgoing>, HandlerError> {
        let (lender, phone) = (&who.lender, &who.phone);
        let mut out = Vec::new();
        if let Some(to) = who.borrower_email.clone() {
            out.push(Outgoing {
                kind: "borrower",
                channel: "email",
                to,
                template: "status_borrower",
                subject: crate::mail::subject(
                    who.language,
                    "status_borrower",
                    &[
                        ("lender", lender),
                        ("status", &crate::mail::status_word(who.language, status)),
                    ],
                ),
                context: json!({"first_name": who.first_name, "status": status, "lender": lender,
                    "support_phone": phone}),
                unsubscribe: false,
                language: who.language,
            });
        }
        if let Some(to) = self.sms_number(&who.key, who.lead).await? {
            out.push(Outgoing {
                kind: "borrower",
                channel: "sms",
                to,
                template: "status_sms",
                subject: crate::mail::subject(
                    who.language,
                    "status_sms",
                    &[
                        ("lender", lender),
                        ("status", &crate::mail::status_word(who.language, status)),
                        ("phone", phone),
                    ],
                ),
                context: Value::Null,
                unsubscribe: false,
                language: who.language,
            });
        }
        out.extend(who.agent_update(&format!("Loan status: {status}")));
        Ok(out)
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
            .map_err(HandlerError::of_key)?;
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
            self.send_email(id, lead, o).await?
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

impl Notifier {
    /// Render and send one email (a reminder with its one-click unsubscribe link).
    async fn send_email(
        &self,
        id: Uuid,
        lead: Uuid,
        o: Outgoing,
    ) -> Result<Result<String, SendError>, HandlerError> {
        let mailer = &self.state.mailer;
        let mut context = o.context;
        let unsubscribe = if o.unsubscribe {
            let url = self.unsubscribe_url(lead).await?;
            context["unsubscribe"] = Value::String(url.clone());
            Some(url)
        } else {
            None
        };
        let body = mailer
            .templates
            .render(o.template, o.language, &context)
            .map_err(HandlerError::Permanent)?;
        Ok(mailer
            .send(id, &o.to, &o.subject, body, unsubscribe.as_deref())
            .await)
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
