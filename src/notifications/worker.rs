//! The notification worker (issue 7): reacts to events from the outbox and emails borrowers
//! and agents. One notification row per event, recipient and channel (unique), written and
//! updated outside the message's transaction, so a redelivered event or a retry after a
//! transient SMTP failure never sends a message twice. Messages carry names and links only.

use futures::future::BoxFuture;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::crypto::field::{self, Location};
use crate::mail::SendError;
use crate::queue::consumer::{Handler, HandlerError, Message};
use crate::state::AppState;

pub use crate::events::{NOTIFIER as CONSUMER, NOTIFIER_TOPICS as TOPICS};

/// How `last_error` starts when the queue's retries ran out (a DLQ replay retries these).
const EXHAUSTED: &str = "retries exhausted";

pub struct Notifier {
    state: AppState,
    http: reqwest::Client,
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

fn transient(e: impl Into<anyhow::Error>) -> HandlerError {
    HandlerError::Transient(e.into())
}

fn id_of(message: &Message, key: &str) -> Option<Uuid> {
    message
        .payload
        .get(key)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

fn decrypt(
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
struct Outgoing {
    kind: &'static str,
    /// `email`, or `sms` (the body is then `subject`).
    channel: &'static str,
    to: String,
    template: &'static str,
    subject: String,
    context: Value,
    /// Not transactional (a reminder): carries a one-click unsubscribe link.
    unsubscribe: bool,
}

/// A link's sealed recipient address and, while it lives, its sealed token.
type SealedRecipient = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A link's sealed borrower email, sealed token and expiry.
type LinkRow = (Option<Vec<u8>>, Option<Vec<u8>>, time::OffsetDateTime);

/// Who a loan belongs to: (lead, borrower first name, borrower email, agent name, agent email).
type LoanPeople = (Uuid, String, Option<Vec<u8>>, String, Option<String>);

impl Notifier {
    fn branding(&self) -> (String, String) {
        let n = &self.state.settings.notifications;
        (n.lender_name.clone(), n.support_phone.clone())
    }

    async fn people(&self, loan: Uuid) -> Result<Option<LoanPeople>, HandlerError> {
        // language=PostgreSQL
        sqlx::query_as(
            "select l.id, l.first_name, l.email_enc, coalesce(a.display_name, o.owner_subject), a.email
               from loans o join leads l on l.id = o.lead_id left join agents a on a.subject = o.owner_subject
              where o.id = $1",
        )
        .bind(loan)
        .fetch_optional(&self.state.db)
        .await
        .map_err(transient)
    }

    /// The URL of the loan's newest live link that was issued to `to` — a link's token is
    /// only ever sent to the address the link was created for (docs/api.md).
    async fn link_url_for(
        &self,
        key: &[u8; 32],
        loan: Uuid,
        to: &str,
    ) -> Result<Option<String>, HandlerError> {
        // language=PostgreSQL
        let rows: Vec<(Uuid, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "select id, token_enc, borrower_email_enc from upload_links
              where loan_id = $1 and token_enc is not null and borrower_email_enc is not null
                and revoked_at is null and expires_at > now()
              order by id desc limit 20",
        )
        .bind(loan)
        .fetch_all(&self.state.db)
        .await
        .map_err(transient)?;
        for (id, token, email) in rows {
            let recipient = decrypt(key, "upload_links", "borrower_email_enc", id, &email)?;
            if recipient.eq_ignore_ascii_case(to) {
                let token = decrypt(key, "upload_links", "token_enc", id, &token)?;
                return Ok(Some(self.url(&token)));
            }
        }
        Ok(None)
    }

    /// Who hears about a document's rejection, and the way back: the address of the link
    /// the file came through (with that link, while it lives); for an agent's upload, the
    /// borrower's own address with a live link issued to it, if there is one.
    async fn rejection_recipient(
        &self,
        key: &[u8; 32],
        loan: Uuid,
        link: Option<Uuid>,
        borrower_email: Option<String>,
    ) -> Result<Option<(String, Option<String>)>, HandlerError> {
        if let Some(link) = link {
            // language=PostgreSQL
            let row: Option<SealedRecipient> = sqlx::query_as(
                "select borrower_email_enc,
                        case when revoked_at is null and expires_at > now() then token_enc end
                   from upload_links where id = $1",
            )
            .bind(link)
            .fetch_optional(&self.state.db)
            .await
            .map_err(transient)?;
            if let Some((Some(email), token)) = row {
                let to = decrypt(key, "upload_links", "borrower_email_enc", link, &email)?;
                let url = match token {
                    Some(token) => {
                        Some(self.url(&decrypt(key, "upload_links", "token_enc", link, &token)?))
                    }
                    None => None,
                };
                return Ok(Some((to, url)));
            }
        }
        match borrower_email {
            Some(to) => {
                let url = self.link_url_for(key, loan, &to).await?;
                Ok(Some((to, url)))
            }
            None => Ok(None),
        }
    }

    /// The borrower's phone, only with a current SMS opt-in and a configured gateway.
    async fn sms_number(&self, key: &[u8; 32], lead: Uuid) -> Result<Option<String>, HandlerError> {
        if self.state.settings.notifications.sms.gateway_url.is_none() {
            return Ok(None);
        }
        // language=PostgreSQL
        let row: Option<Option<Vec<u8>>> = sqlx::query_scalar(
            "select phone_enc from leads where id = $1 and sms_consent_at is not null and sms_opted_out_at is null",
        )
        .bind(lead)
        .fetch_optional(&self.state.db)
        .await
        .map_err(transient)?;
        match row.flatten() {
            Some(sealed) => Ok(Some(decrypt(key, "leads", "phone_enc", lead, &sealed)?)),
            None => Ok(None),
        }
    }

    async fn send_sms(&self, to: &str, body: &str) -> Result<String, SendError> {
        let sms = &self.state.settings.notifications.sms;
        let Some(url) = &sms.gateway_url else {
            return Err(SendError::Permanent("no SMS gateway configured".into()));
        };
        let mut request = self
            .http
            .post(url.clone())
            .json(&json!({"to": to, "body": body}));
        if let Ok(Some(token)) = sms.auth_token() {
            use secrecy::ExposeSecret;
            request = request.header(sms.auth_header.as_str(), token.expose_secret());
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                let answer: Value = r.json().await.unwrap_or(Value::Null);
                Ok(answer
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned())
            }
            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => Err(
                SendError::Transient(format!("SMS gateway HTTP {}", r.status().as_u16())),
            ),
            Ok(r) => Err(SendError::Permanent(format!(
                "SMS gateway HTTP {}",
                r.status().as_u16()
            ))),
            Err(_) => Err(SendError::Transient("SMS gateway unreachable".into())),
        }
    }

    /// The borrower's upload page for a link token.
    fn url(&self, token: &str) -> String {
        self.public_url(&format!("/u/{token}"))
    }

    /// `path` at the address borrowers reach the service at.
    fn public_url(&self, path: &str) -> String {
        let base = self.state.settings.server.public_base_url.as_str();
        format!("{}{path}", base.trim_end_matches('/'))
    }

    /// A reminder (or digest) of the requests still outstanding, to the address the link
    /// went to. Nothing when the borrower unsubscribed, the link is gone, or every request
    /// was answered since the scheduler queued it.
    async fn reminder(
        &self,
        message: &Message,
        key: &[u8; 32],
        loan: Uuid,
        lead: Uuid,
        first_name: &str,
        agent: &str,
    ) -> Result<Option<Outgoing>, HandlerError> {
        let state = &self.state;
        let (lender, phone) = self.branding();
        // language=PostgreSQL
        let opted_out: bool =
            sqlx::query_scalar("select email_opted_out_at is not null from leads where id = $1")
                .bind(lead)
                .fetch_one(&state.db)
                .await
                .map_err(transient)?;
        if opted_out {
            return Ok(None);
        }
        let ids: Vec<Uuid> = message
            .payload
            .get("requestIds")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
                    .collect()
            })
            .unwrap_or_default();
        // language=PostgreSQL
        let documents: Vec<String> = sqlx::query_scalar(
            "select replace(doc_type, '_', ' ') from document_requests
              where id = any($1) and loan_id = $2 and state in ('outstanding', 'rejected') order by id",
        )
        .bind(&ids)
        .bind(loan)
        .fetch_all(&state.db)
        .await
        .map_err(transient)?;
        if documents.is_empty() {
            return Ok(None);
        }
        let link: Option<(Uuid, Vec<u8>, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            // language=PostgreSQL
            "select u.id, u.token_enc, u.borrower_email_enc from upload_links u
              where u.loan_id = $1 and u.token_enc is not null and u.borrower_email_enc is not null
                and {}
              order by u.id desc limit 1",
            crate::links::store::link_takes_files("now()")
        )))
        .bind(loan)
        .fetch_optional(&state.db)
        .await
        .map_err(transient)?;
        let Some((link, token, email)) = link else {
            return Ok(None);
        };
        let to = decrypt(key, "upload_links", "borrower_email_enc", link, &email)?;
        let token = decrypt(key, "upload_links", "token_enc", link, &token)?;
        let many = documents.len() > 1;
        Ok(Some(Outgoing {
            kind: "borrower",
            channel: "email",
            to,
            template: "document_reminder",
            subject: if many {
                format!(
                    "{lender}: reminder — {} documents still needed",
                    documents.len()
                )
            } else {
                format!("{lender}: reminder — a document is still needed")
            },
            context: json!({"first_name": first_name, "agent": agent, "lender": lender,
                "support_phone": phone, "documents": documents, "link": self.url(&token)}),
            unsubscribe: true,
        }))
    }

    /// A new one-click unsubscribe URL for the lead (only the token's hash is kept).
    async fn unsubscribe_url(&self, lead: Uuid) -> Result<String, HandlerError> {
        let token = crate::auth::session::random_token();
        // language=PostgreSQL
        sqlx::query("insert into unsubscribe_tokens (token_hash, lead_id) values ($1, $2)")
            .bind(crate::links::token_hash(&token))
            .bind(lead)
            .execute(&self.state.db)
            .await
            .map_err(transient)?;
        Ok(self.public_url(&format!("/v1/public/unsubscribe/{token}")))
    }

    /// The messages an event asks for, with the loan and lead they are about.
    async fn plan(
        &self,
        message: &Message,
    ) -> Result<Option<(Uuid, Uuid, Vec<Outgoing>)>, HandlerError> {
        let state = &self.state;
        let (lender, phone) = self.branding();
        let loan = match message.topic.as_str() {
            "upload_link.created" | crate::notifications::reminders::TOPIC => {
                id_of(message, "loanId")
            }
            "doc.available"
            | "doc.rejected"
            | "doc.reviewed"
            | "loan.status.changed"
            | "loan.needs_attention" => id_of(message, "loanId"),
            "credit.completed" | "credit.failed" => {
                // A pull belongs to a lead; tell the agent about the lead's newest loan, if any.
                let Some(lead) = id_of(message, "leadId") else {
                    return Ok(None);
                };
                // language=PostgreSQL
                sqlx::query_scalar(
                    "select id from loans where lead_id = $1 order by id desc limit 1",
                )
                .bind(lead)
                .fetch_optional(&state.db)
                .await
                .map_err(transient)?
            }
            _ => None,
        };
        let Some(loan) = loan else { return Ok(None) };
        let Some((lead, first_name, email_enc, agent, agent_email)) = self.people(loan).await?
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
        match message.topic.as_str() {
            "upload_link.created" => {
                let Some(link) = id_of(message, "linkId") else {
                    return Ok(None);
                };
                // language=PostgreSQL
                let row: Option<LinkRow> = sqlx::query_as(
                    "select borrower_email_enc, token_enc, expires_at from upload_links where id = $1",
                )
                .bind(link)
                .fetch_optional(&state.db)
                .await
                .map_err(transient)?;
                if let Some((Some(email), Some(token), expires)) = row {
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
            "doc.reviewed"
                if message.payload.get("decision").and_then(Value::as_str) == Some("reject") =>
            {
                let Some(document) = id_of(message, "documentId") else {
                    return Ok(None);
                };
                // language=PostgreSQL
                let row: Option<(String, Option<Vec<u8>>, Option<Uuid>)> = sqlx::query_as(
                    "select doc_type, review_reason_enc, upload_link_id from documents where id = $1",
                )
                .bind(document)
                .fetch_optional(&state.db)
                .await
                .map_err(transient)?;
                if let Some((doc_type, Some(sealed), link)) = row
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
            "loan.status.changed" => {
                let status = message
                    .payload
                    .get("newStatus")
                    .and_then(Value::as_str)
                    .unwrap_or("updated")
                    .to_owned();
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
            crate::notifications::reminders::TOPIC => {
                out.extend(
                    self.reminder(message, &key, loan, lead, &first_name, &agent)
                        .await?,
                );
            }
            "doc.available" => out.extend(agent_update("A document was received".into())),
            "doc.rejected" => {
                out.extend(agent_update("A document was rejected by the checks".into()))
            }
            "credit.completed" => out.extend(agent_update("A credit report is ready".into())),
            "credit.failed" => out.extend(agent_update("A credit pull failed".into())),
            "loan.needs_attention" => {
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
        // language=PostgreSQL
        sqlx::query(
            "insert into notifications (id, source_message_id, recipient_kind, channel, template, loan_id, lead_id, recipient_enc)
             values ($1, $2, $3, $8, $4, $5, $6, $7)
             on conflict (source_message_id, recipient_kind, channel) do nothing",
        )
        .bind(id)
        .bind(message.id)
        .bind(o.kind)
        .bind(o.template)
        .bind(loan)
        .bind(lead)
        .bind(&sealed)
        .bind(o.channel)
        .execute(&state.db)
        .await
        .map_err(transient)?;
        // language=PostgreSQL
        let (id, current, last_error): (Uuid, String, Option<String>) = sqlx::query_as(
            "select id, state, last_error from notifications where source_message_id = $1 and recipient_kind = $2 and channel = $3",
        )
        .bind(message.id)
        .bind(o.kind)
        .bind(o.channel)
        .fetch_one(&state.db)
        .await
        .map_err(transient)?;
        // A message that ran out of retries reaches a handler again only by an operator's
        // `admin dlq replay` (it never entered the inbox): that is a request to try again.
        let replayed = current == "failed"
            && last_error
                .as_deref()
                .is_some_and(|e| e.starts_with(EXHAUSTED));
        if replayed {
            // language=PostgreSQL
            sqlx::query(
                "update notifications set state = 'queued' where id = $1 and state = 'failed'",
            )
            .bind(id)
            .execute(&state.db)
            .await
            .map_err(transient)?;
        } else if current != "queued" {
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
                // language=PostgreSQL
                sqlx::query(
                    "update notifications set state = 'sent', attempts = attempts + 1, provider_message_id = $2,
                            sent_at = now(), last_error = null where id = $1",
                )
                .bind(id)
                .bind(provider_id)
                .execute(&state.db)
                .await
                .map_err(transient)?;
                Ok(())
            }
            Err(SendError::Permanent(reason)) => {
                // language=PostgreSQL
                sqlx::query("update notifications set state = 'failed', attempts = attempts + 1, last_error = $2 where id = $1")
                    .bind(id)
                    .bind(&reason)
                    .execute(&state.db)
                    .await
                    .map_err(transient)?;
                Ok(())
            }
            Err(SendError::Transient(reason)) => {
                // language=PostgreSQL
                sqlx::query("update notifications set attempts = attempts + 1, last_error = $2 where id = $1")
                    .bind(id)
                    .bind(&reason)
                    .execute(&state.db)
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
            // language=PostgreSQL
            sqlx::query(
                "update notifications set state = 'failed', last_error = $2 where source_message_id = $1 and state = 'queued'",
            )
            .bind(message.id)
            .bind(format!("{EXHAUSTED}: {}", error.chars().take(100).collect::<String>()))
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
    }
}
