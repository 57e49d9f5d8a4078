//! Prometheus metrics (prometheus-client). One registry per `AppState` rather than a
//! process-global recorder, so that several apps in one process (the test suite) keep
//! their counts apart. Labels are route templates and states — never ids, tokens or PII.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The matched route template (`/v1/loans/{id}`), or `unmatched`.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabels {
    pub dependency: String,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<HttpLabels, Histogram>,
    pub dependency_up: Family<DependencyLabels, Gauge>,
    pub documents_processed: Family<OutcomeLabels, Counter>,
    /// 0 closed, 1 half-open, 2 open; set when /metrics is scraped.
    pub circuit_state: Family<IntegrationLabels, Gauge>,
    /// The pipeline's work per document: HEAD, the streaming pass, the recorded outcome.
    pub document_processing: Histogram,
    /// Outbox events not yet published, and the age of the oldest; set when scraped.
    pub outbox_unpublished: Gauge,
    pub outbox_oldest_unpublished: Gauge<f64, AtomicU64>,
    /// Messages in each consumer's dead-letter queue; set when scraped.
    pub dlq_messages: Family<ConsumerLabels, Gauge>,
    /// Readiness checks that went out to the dependencies (not answered from the cache).
    pub readiness_checks: Counter,
    /// Browser sign-ins refused at the callback, by reason.
    pub login_failures: Family<OutcomeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntegrationLabels {
    pub integration: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `available`, or `rejected` with its reason (`rejected_infected`, …).
    pub outcome: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("loanfolio"),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(|| {
                // 1 ms … 10 s: the dashboard target is 200 ms, the benchmark target 25 ms p99.
                Histogram::new([
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
            dependency_up: Family::default(),
            documents_processed: Family::default(),
            document_processing: Histogram::new([
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            circuit_state: Family::default(),
            outbox_unpublished: Gauge::default(),
            outbox_oldest_unpublished: Gauge::default(),
            dlq_messages: Family::default(),
            readiness_checks: Counter::default(),
            login_failures: Family::default(),
        };
        metrics.register_all();
        metrics
    }

    /// Every metric in the registry `/metrics` renders, with its help text.
    fn register_all(&mut self) {
        let registry = &mut self.registry;
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            self.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by method, route template and status",
            self.http_duration.clone(),
        );
        registry.register(
            "dependency_up",
            "1 when the dependency answered the last readiness check, else 0",
            self.dependency_up.clone(),
        );
        registry.register(
            "documents_processed",
            "Documents the pipeline decided, by outcome",
            self.documents_processed.clone(),
        );
        registry.register(
            "document_processing_seconds",
            "Pipeline time per decided document (HEAD, scan + hash + type + encryption pass, outcome)",
            self.document_processing.clone(),
        );
        registry.register(
            "circuit_state",
            "Circuit breaker per integration: 0 closed, 1 half-open, 2 open",
            self.circuit_state.clone(),
        );
        registry.register(
            "outbox_unpublished",
            "Outbox events not yet published to the broker (read when /metrics is scraped)",
            self.outbox_unpublished.clone(),
        );
        registry.register(
            "outbox_oldest_unpublished_seconds",
            "Age of the oldest unpublished outbox event, 0 when none (read when scraped)",
            self.outbox_oldest_unpublished.clone(),
        );
        registry.register(
            "dlq_messages",
            "Messages waiting in each consumer's dead-letter queue (read when scraped)",
            self.dlq_messages.clone(),
        );
        registry.register(
            "readiness_checks",
            "Readiness checks that probed every dependency (cached answers not counted)",
            self.readiness_checks.clone(),
        );
        registry.register(
            "login_failures",
            "Browser sign-ins refused at the callback, by reason (not_this_browser, provider_error, …)",
            self.login_failures.clone(),
        );
    }

    pub fn observe_request(&self, labels: HttpLabels, seconds: f64) {
        self.http_requests.get_or_create(&labels).inc();
        self.http_duration.get_or_create(&labels).observe(seconds);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
