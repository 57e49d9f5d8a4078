//! Structured logs (tracing). JSON by default, one object per line with the current span's
//! fields, so every line of a request carries its `request_id`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogFormat, LogSettings};

pub fn filter(settings: &LogSettings) -> EnvFilter {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // lapin logs every unroutable (mandatory) message with its whole body at WARN; the relay
    // already handles those (an event nobody subscribes to), and bodies stay out of logs.
    match "lapin::returned_messages=error".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// A subscriber writing to `writer`; the binary installs it globally, tests per thread.
pub fn subscriber<W>(
    settings: &LogSettings,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(settings))
        .with_writer(writer);
    match settings.format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .flatten_event(true)
                .finish(),
        ),
        LogFormat::Pretty => Box::new(builder.finish()),
    }
}

pub fn init(settings: &LogSettings) {
    let _ = tracing::subscriber::set_global_default(subscriber(settings, std::io::stdout));
}

pub const REQUEST_ID: &str = "x-request-id";

/// The request id, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// An incoming id is kept only if it is short and plain, so a client cannot inject log
/// fields or header junk through it; otherwise we mint a UUIDv7.
pub fn accept_request_id(value: Option<&axum::http::HeaderValue>) -> String {
    value
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// The request id the edge middleware put on the request (`http::edge`). Every router is
/// built with the edge (`http::finish`), so it is always there; without it the handler
/// answers 500 rather than log without an id.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestId {
    type Rejection = crate::error::AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<RequestId>().cloned().ok_or_else(|| {
            anyhow::anyhow!("no request id: the router lacks the edge middleware").into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn request_ids_are_kept_only_when_plain() {
        let keep = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(accept_request_id(Some(&keep)), "abc-123_x.y:z");
        let evil = HeaderValue::from_static("a b\"}{");
        assert_ne!(accept_request_id(Some(&evil)), "a b\"}{");
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert_eq!(accept_request_id(Some(&long)).len(), 36);
        assert_eq!(accept_request_id(None).len(), 36);
    }
}
