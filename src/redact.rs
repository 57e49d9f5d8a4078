//! Keep secrets out of messages. Error texts from client libraries can quote the URL they
//! were given, password included; everything that reports a dependency's error passes it
//! through [`scrub`] first.

use secrecy::{ExposeSecret, SecretString};

/// Remove the URL, its password and its user-info from `message`.
pub fn scrub(message: &str, url: &SecretString) -> String {
    let raw = url.expose_secret();
    let mut out = message.replace(raw, "<redacted-url>");
    if let Ok(parsed) = url::Url::parse(raw)
        && let Some(password) = parsed.password().filter(|p| !p.is_empty())
    {
        out = out.replace(password, "<redacted>");
        // The percent-decoded form can appear too.
        if let Ok(decoded) = percent_encoding::percent_decode_str(password).decode_utf8()
            && !decoded.is_empty()
        {
            out = out.replace(decoded.as_ref(), "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_url_and_password_forms() {
        let url = SecretString::from("amqp://svc:p%40ss-canary@mq:5672/%2f");
        let message =
            "failed amqp://svc:p%40ss-canary@mq:5672/%2f: auth p@ss-canary / p%40ss-canary";
        let out = scrub(message, &url);
        assert!(!out.contains("ss-canary"), "{out}");
        assert!(out.contains("<redacted-url>"), "{out}");
    }
}
