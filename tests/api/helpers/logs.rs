//! Captures the log lines an in-process app writes, in the service's own JSON format.

use std::io::Write;
use std::sync::{Arc, Mutex};

use loanfolio::config::{LogFormat, LogSettings};
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

pub struct LogCapture {
    buffer: Buffer,
    _guard: DefaultGuard,
}

impl LogCapture {
    /// Route this thread's tracing output into a buffer, as JSON lines at `debug`.
    pub fn install(_settings: &LogSettings) -> Self {
        let settings = LogSettings {
            format: LogFormat::Json,
            // Our own code at debug, chatty libraries at info.
            level: "debug,h2=info,hyper=info,hyper_util=info,lapin=info,amq_protocol=info,sqlx=info,reqwest=info,rustls=info".into(),
        };
        let buffer = Buffer::default();
        let guard = tracing::subscriber::set_default(loanfolio::telemetry::subscriber(
            &settings,
            buffer.clone(),
        ));
        Self {
            buffer,
            _guard: guard,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.0.lock().unwrap()).into_owned()
    }

    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
            })
            .collect()
    }
}
