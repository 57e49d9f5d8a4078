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
