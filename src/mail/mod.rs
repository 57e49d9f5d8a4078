//! Email to borrowers and agents (issue 7): templates embedded in the binary (overridable
//! from `notifications.templates_dir`, HTML auto-escaped) and an SMTP client (lettre) with
//! STARTTLS, implicit TLS or — for local development — plain SMTP.

use std::time::Duration;

use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::{AutoEscape, Environment};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::config::{NotificationSettings, SmtpTls};
use crate::domain::Language;

const BUILT_IN: &[(&str, &str)] = &[
    (
        "link_invitation.txt",
        include_str!("templates/link_invitation.txt"),
    ),
    (
        "link_invitation.html",
        include_str!("templates/link_invitation.html"),
    ),
    (
        "document_rejected.txt",
        include_str!("templates/document_rejected.txt"),
    ),
    (
        "document_rejected.html",
        include_str!("templates/document_rejected.html"),
    ),
    (
        "status_borrower.txt",
        include_str!("templates/status_borrower.txt"),
    ),
    (
        "status_borrower.html",
        include_str!("templates/status_borrower.html"),
    ),
    (
        "document_reminder.txt",
        include_str!("templates/document_reminder.txt"),
    ),
    (
        "document_reminder.html",
        include_str!("templates/document_reminder.html"),
    ),
    (
        "link_invitation.es.txt",
        include_str!("templates/link_invitation.es.txt"),
    ),
    (
        "link_invitation.es.html",
        include_str!("templates/link_invitation.es.html"),
    ),
    (
        "document_rejected.es.txt",
        include_str!("templates/document_rejected.es.txt"),
    ),
    (
        "document_rejected.es.html",
        include_str!("templates/document_rejected.es.html"),
    ),
    (
        "status_borrower.es.txt",
        include_str!("templates/status_borrower.es.txt"),
    ),
    (
        "status_borrower.es.html",
        include_str!("templates/status_borrower.es.html"),
    ),
    (
        "document_reminder.es.txt",
        include_str!("templates/document_reminder.es.txt"),
    ),
    (
        "document_reminder.es.html",
        include_str!("templates/document_reminder.es.html"),
    ),
    (
        "agent_update.txt",
        include_str!("templates/agent_update.txt"),
    ),
    (
        "agent_update.html",
        include_str!("templates/agent_update.html"),
    ),
];

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The built-in templates, each replaced by `<dir>/<name>` when that file exists.
    pub fn load(dir: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        for (name, source) in BUILT_IN {
            let source = match dir.map(|d| d.join(name)).filter(|p| p.is_file()) {
                Some(path) => std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("template {}: {e}", path.display()))?,
                None => (*source).to_owned(),
            };
            env.add_template_owned(*name, source)
                .map_err(|e| anyhow::anyhow!("template {name}: {e}"))?;
        }
        Ok(Self { env })
    }

    /// (plain text, HTML) of `template` in `language` with `context`; a template that has
    /// no version in that language is sent in English.
    pub fn render(
        &self,
        template: &str,
        language: Language,
        context: &Value,
    ) -> anyhow::Result<(String, String)> {
        let ctx = minijinja::Value::from(minijinja::value::Serde(context));
        let named = |ext: &str| match language {
            Language::En => format!("{template}.{ext}"),
            other => {
                let localised = format!("{template}.{}.{ext}", other.as_str());
                if self.env.get_template(&localised).is_ok() {
                    localised
                } else {
                    format!("{template}.{ext}")
                }
            }
        };
        let text = self.env.get_template(&named("txt"))?.render(ctx.clone())?;
        let html = self.env.get_template(&named("html"))?.render(ctx)?;
        Ok((text, html))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// 4xx, connection or timeout: try again later.
    #[error("transient SMTP failure: {0}")]
    Transient(String),
    /// 5xx: this message will never be accepted.
    #[error("permanent SMTP failure: {0}")]
    Permanent(String),
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    pub templates: Templates,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").finish_non_exhaustive()
    }
}

impl Mailer {
    pub fn new(settings: &NotificationSettings) -> anyhow::Result<Self> {
        let smtp = &settings.smtp;
        // A site CA bundle replaces the system's roots for the relay's certificate.
        let pinned = match &smtp.ca_file {
            Some(ca) => Some(
                TlsParameters::builder(smtp.host.clone())
                    .certificate_store(CertificateStore::None)
                    .add_root_certificate(Certificate::from_pem(&crate::tls::read_ca(
                        "notifications.smtp.ca_file",
                        ca,
                    )?)?)
                    .build_rustls()?,
            ),
            None => None,
        };
        type Transport = AsyncSmtpTransport<Tokio1Executor>;
        let builder = match (smtp.tls, pinned) {
            (SmtpTls::None, _) => Transport::builder_dangerous(&smtp.host),
            (SmtpTls::Starttls, Some(p)) => {
                Transport::builder_dangerous(&smtp.host).tls(Tls::Required(p))
            }
            (SmtpTls::Implicit, Some(p)) => {
                Transport::builder_dangerous(&smtp.host).tls(Tls::Wrapper(p))
            }
            (SmtpTls::Starttls, None) => Transport::starttls_relay(&smtp.host)?,
            (SmtpTls::Implicit, None) => Transport::relay(&smtp.host)?,
        }
        .port(smtp.port)
        .timeout(Some(Duration::from_secs(smtp.timeout_secs)));
        let builder = match (&smtp.username, smtp.password()?) {
            (Some(user), Some(password)) => builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            )),
            _ => builder,
        };
        Ok(Self {
            transport: builder.build(),
            from: settings
                .from
                .parse()
                .map_err(|e| anyhow::anyhow!("notifications.from: {e}"))?,
            reply_to: settings
                .reply_to
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("notifications.reply_to: {e}"))?,
            templates: Templates::load(settings.templates_dir.as_deref())?,
        })
    }

    /// Send one message; `id` makes its Message-ID, so a resend is recognisable. A
    /// non-transactional message carries `unsubscribe` (the one-click URL) as its
    /// List-Unsubscribe header.
    pub async fn send(
        &self,
        id: uuid::Uuid,
        to: &str,
        subject: &str,
        (text, html): (String, String),
        unsubscribe: Option<&str>,
    ) -> Result<String, SendError> {
        let to: Mailbox = to
            .parse()
            .map_err(|_| SendError::Permanent("the recipient address is invalid".into()))?;
        let message_id = format!("<{id}@loanfolio>");
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id.clone()));
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        if let Some(url) = unsubscribe {
            builder = builder
                .header(ListUnsubscribe(format!("<{url}>")))
                .header(ListUnsubscribePost);
        }
        let message = builder
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| SendError::Permanent(format!("building the message: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(message_id),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(smtp_reason(&e))),
            Err(e) => Err(SendError::Transient(smtp_reason(&e))),
        }
    }
}

/// RFC 2369 `List-Unsubscribe: <https://…>`.
#[derive(Debug, Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// RFC 8058 `List-Unsubscribe-Post: List-Unsubscribe=One-Click`: the mail client may POST
/// to the List-Unsubscribe URL without opening it in a browser.
#[derive(Debug, Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_owned())
    }
}

/// The SMTP status of an error, without the addresses a server may quote.
fn smtp_reason(e: &lettre::transport::smtp::Error) -> String {
    match e.status() {
        Some(code) => format!("SMTP {code}"),
        None if e.is_timeout() => "SMTP timeout".into(),
        None => "SMTP connection failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let t = Templates::load(None).unwrap();
        let (text, html) = t
            .render(
                "document_rejected",
                Language::En,
                &serde_json::json!({"first_name": "Ana", "agent": "Avery", "doc_type": "W-2",
                    "reason": "<b>page 2</b> & 3 missing", "link": null, "support_phone": "1", "lender": "L"}),
            )
            .unwrap();
        assert!(text.contains("<b>page 2</b> & 3 missing"));
        assert!(
            html.contains("&lt;b&gt;page 2&lt;&#x2f;b&gt; &amp; 3 missing"),
            "{html}"
        );
    }

    #[test]
    fn a_folder_overrides_a_built_in_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("status_borrower.txt"),
            "Custom {{ status }}",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let (text, html) = t
            .render("status_borrower", Language::En, &serde_json::json!({"status": "submitted", "first_name": "A", "support_phone": "1", "lender": "L"}))
            .unwrap();
        assert_eq!(text, "Custom submitted");
        assert!(html.contains("submitted"), "the HTML part stays built in");
    }
}

/// The borrower emails' subject lines and status words, per language (templates/subjects.json).
static SUBJECTS: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
    serde_json::from_str(include_str!("templates/subjects.json"))
        .expect("templates/subjects.json is JSON (a unit test holds it)")
});

/// The subject `key` in `language` with its `{placeholders}` filled (English when the
/// language has none).
pub fn subject(language: Language, key: &str, params: &[(&str, &str)]) -> String {
    let line = SUBJECTS[language.as_str()][key]
        .as_str()
        .or_else(|| SUBJECTS["en"][key].as_str())
        .unwrap_or(key);
    params.iter().fold(line.to_owned(), |line, (name, value)| {
        line.replace(&format!("{{{name}}}"), value)
    })
}

/// A loan status as a borrower reads it in `language`.
pub fn status_word(language: Language, status: &str) -> String {
    match language {
        Language::En => status.to_owned(),
        other => SUBJECTS[format!("status_{}", other.as_str())][status]
            .as_str()
            .unwrap_or(status)
            .to_owned(),
    }
}

#[cfg(test)]
mod language_tests {
    use super::*;

    #[test]
    fn every_subject_exists_in_both_languages_and_fills_its_placeholders() {
        let en = SUBJECTS["en"].as_object().unwrap();
        let es = SUBJECTS["es"].as_object().unwrap();
        assert_eq!(en.keys().collect::<Vec<_>>(), es.keys().collect::<Vec<_>>());
        assert_eq!(
            subject(
                Language::Es,
                "status_borrower",
                &[
                    ("lender", "Banco"),
                    ("status", &status_word(Language::Es, "submitted"))
                ]
            ),
            "Banco: su solicitud está presentada"
        );
        assert_eq!(
            subject(Language::En, "link_invitation", &[("lender", "Bank")]),
            "Bank: please upload your documents"
        );
    }

    #[test]
    fn borrower_templates_render_in_spanish_with_the_english_variables() {
        let templates = Templates::load(None).unwrap();
        let context = serde_json::json!({"first_name": "Ana", "agent": "Avery", "lender": "Banco",
            "support_phone": "555", "link": "https://x/u/t", "expires": "2026-12-12",
            "doc_type": "bank statement", "reason": "borrosa", "status": "submitted",
            "documents": ["bank statement"]});
        for name in [
            "link_invitation",
            "document_rejected",
            "status_borrower",
            "document_reminder",
        ] {
            let (text, html) = templates.render(name, Language::Es, &context).unwrap();
            assert!(text.contains("Ana") && html.contains("Ana"), "{name}");
            let (english, _) = templates.render(name, Language::En, &context).unwrap();
            assert_ne!(text, english, "{name} has its own Spanish text");
        }
    }
}
