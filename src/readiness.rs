//! Readiness (docs/architecture.md): every dependency by name, up or down. 503 only when one the
//! role cannot work without is down (serve: PostgreSQL; worker: PostgreSQL and RabbitMQ) or
//! the schema is not at this release's version. The others degrade features and are
//! reported, so one sidecar's outage never takes every replica out of the load balancer.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DependencyStatus {
    Up,
    Down,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DependencyReport {
    pub status: DependencyStatus,
    /// Whether this role answers 503 while the dependency is down.
    pub required: bool,
    /// Why it is down (secrets and PII never appear here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SchemaReport {
    pub ready: bool,
    pub expected_version: i64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReadinessReport {
    /// `ready` or `not_ready`.
    pub status: String,
    pub role: String,
    pub schema: SchemaReport,
    /// Keyed by `postgres`, `rabbitmq`, `redis`, `s3`, `clamd`, `oidc`, `kms`.
    pub dependencies: BTreeMap<String, DependencyReport>,
    /// Circuit breakers of the external integrations (`closed`, `open`, `half_open`):
    /// reported, never a reason to be not ready.
    pub integrations: BTreeMap<String, String>,
}

impl ReadinessReport {
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

/// Remembers the last status of each dependency so that changes are logged once, not on
/// every probe.
#[derive(Debug, Default)]
pub struct Transitions(Mutex<BTreeMap<&'static str, DependencyStatus>>);

impl Transitions {
    pub fn record(&self, name: &'static str, status: DependencyStatus, detail: Option<&str>) {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let previous = last.insert(name, status);
        if previous == Some(status) {
            return;
        }
        match status {
            DependencyStatus::Up if previous.is_some() => {
                tracing::info!(dependency = name, "dependency is up again");
            }
            DependencyStatus::Up => {}
            DependencyStatus::Down => {
                tracing::warn!(
                    dependency = name,
                    detail = detail.unwrap_or(""),
                    "dependency is down"
                );
            }
        }
    }
}

/// The last full report and when it was made. The lock is held while a check runs, so
/// concurrent probes wait for that one instead of each fanning out (single flight).
#[derive(Debug, Default)]
pub struct Cache(pub tokio::sync::Mutex<Option<(Instant, ReadinessReport)>>);

/// What the public listener shows: names and up/down, no reasons (they name internal
/// hosts and ports), no integrations (docs/api.md; docs/api.md).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PublicReadiness {
    /// `ready` or `not_ready`.
    pub status: String,
    pub role: String,
    pub schema: PublicSchema,
    /// Keyed by `postgres`, `rabbitmq`, `redis`, `s3`, `clamd`, `oidc`, `kms`.
    pub dependencies: BTreeMap<String, PublicDependency>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PublicSchema {
    pub ready: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PublicDependency {
    pub status: DependencyStatus,
}

impl From<&ReadinessReport> for PublicReadiness {
    fn from(report: &ReadinessReport) -> Self {
        Self {
            status: report.status.clone(),
            role: report.role.clone(),
            schema: PublicSchema {
                ready: report.schema.ready,
            },
            dependencies: report
                .dependencies
                .iter()
                .map(|(name, d)| (name.clone(), PublicDependency { status: d.status }))
                .collect(),
        }
    }
}
