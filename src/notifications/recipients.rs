//! What the notifier looks up before it writes a message: who a loan belongs to, a link's
//! recipient and URL, a rejection's way back, the SMS number, a reminder's contents, the
//! unsubscribe link.

use serde_json::{Value, json};
use uuid::Uuid;

use super::store;
use super::worker::{Audience, Notifier, Outgoing, decrypt, transient};
use crate::mail::SendError;
use crate::queue::consumer::HandlerError;

impl Notifier {
    pub(super) fn branding(&self) -> (String, String) {
        let n = &self.state.settings.notifications;
        (n.lender_name.clone(), n.support_phone.clone())
    }

    pub(super) async fn people(
        &self,
        loan: Uuid,
    ) -> Result<Option<store::LoanPeople>, HandlerError> {
        store::people(&self.state.db, loan).await.map_err(transient)
    }

    /// The URL of the loan's newest live link that was issued to `to` — a link's token is
    /// only ever sent to the address the link was created for (docs/api.md).
    pub(super) async fn link_url_for(
        &self,
        key: &[u8; 32],
        loan: Uuid,
        to: &str,
    ) -> Result<Option<String>, HandlerError> {
        let rows = store::live_emailed_links(&self.state.db, loan)
            .await
            .map_err(transient)?;
        for store::EmailedLink {
            id,
            token_enc: token,
            borrower_email_enc: email,
        } in rows
        {
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
    pub(super) async fn rejection_recipient(
        &self,
        key: &[u8; 32],
        loan: Uuid,
        link: Option<Uuid>,
        borrower_email: Option<String>,
    ) -> Result<Option<(String, Option<String>)>, HandlerError> {
        if let Some(link) = link {
            let row = store::link_recipient(&self.state.db, link)
                .await
                .map_err(transient)?;
            if let Some(store::LinkRecipient {
                borrower_email_enc: Some(email),
                live_token_enc: token,
            }) = row
            {
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
    pub(super) async fn sms_number(
        &self,
        key: &[u8; 32],
        lead: Uuid,
    ) -> Result<Option<String>, HandlerError> {
        if self.state.settings.notifications.sms.gateway_url.is_none() {
            return Ok(None);
        }
        let row = store::sms_phone(&self.state.db, lead)
            .await
            .map_err(transient)?;
        match row {
            Some(sealed) => Ok(Some(decrypt(key, "leads", "phone_enc", lead, &sealed)?)),
            None => Ok(None),
        }
    }

    pub(super) async fn send_sms(&self, to: &str, body: &str) -> Result<String, SendError> {
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
    pub(super) fn url(&self, token: &str) -> String {
        self.public_url(&format!("/u/{token}"))
    }

    /// `path` at the address borrowers reach the service at.
    pub(super) fn public_url(&self, path: &str) -> String {
        let base = self.state.settings.server.public_base_url.as_str();
        format!("{}{path}", base.trim_end_matches('/'))
    }

    /// A reminder (or digest) of the requests still outstanding, to the address the link
    /// went to. Nothing when the borrower unsubscribed, the link is gone, or every request
    /// was answered since the scheduler queued it.
    pub(super) async fn reminder(
        &self,
        requests: &[Uuid],
        who: &Audience,
    ) -> Result<Option<Outgoing>, HandlerError> {
        let state = &self.state;
        let (key, loan, lead) = (&who.key, who.loan, who.lead);
        let (lender, phone, first_name, agent, language) = (
            &who.lender,
            &who.phone,
            &who.first_name,
            &who.agent,
            who.language,
        );
        let opted_out = store::email_opted_out(&state.db, lead)
            .await
            .map_err(transient)?;
        if opted_out {
            return Ok(None);
        }
        let documents = store::still_needed(&state.db, requests, loan)
            .await
            .map_err(transient)?;
        if documents.is_empty() {
            return Ok(None);
        }
        let link = store::reminder_link(&state.db, loan)
            .await
            .map_err(transient)?;
        let Some(store::EmailedLink {
            id: link,
            token_enc: token,
            borrower_email_enc: email,
        }) = link
        else {
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
                crate::mail::subject(
                    language,
                    "document_reminder_many",
                    &[("lender", lender), ("count", &documents.len().to_string())],
                )
            } else {
                crate::mail::subject(language, "document_reminder", &[("lender", lender)])
            },
            context: json!({"first_name": first_name, "agent": agent, "lender": lender,
                "support_phone": phone, "documents": documents, "link": self.url(&token)}),
            unsubscribe: true,
            language,
        }))
    }

    /// A new one-click unsubscribe URL for the lead (only the token's hash is kept).
    pub(super) async fn unsubscribe_url(&self, lead: Uuid) -> Result<String, HandlerError> {
        let token = crate::auth::session::random_token();
        store::insert_unsubscribe_token(&self.state.db, &crate::crypto::token_hash(&token), lead)
            .await
            .map_err(transient)?;
        Ok(self.public_url(&format!("/v1/public/unsubscribe/{token}")))
    }
}
