//! Readiness (docs/architecture.md): every dependency by name, up or down. 503 only when one the
//! role cannot work without is down (serve: PostgreSQL; worker: PostgreSQL and RabbitMQ) or
//! the schema is not at this release's version. The others degrade features and are
//! reported, so one sidecar's outage never takes every replica out of the load balancer.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::app::{AppState, Role};
use crate::db;

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
    fn record(&self, name: &'static str, status: DependencyStatus, detail: Option<&str>) {
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

async fn probe<F>(timeout: Duration, check: F) -> Result<(), String>
where
    F: Future<Output = anyhow::Result<()>>,
{
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// The last full report and when it was made. The lock is held while a check runs, so
/// concurrent probes wait for that one instead of each fanning out (single flight).
#[derive(Debug, Default)]
pub struct Cache(tokio::sync::Mutex<Option<(Instant, ReadinessReport)>>);

/// The report, from the cache while it is younger than `readiness.cache_ms`.
pub async fn cached(state: &AppState) -> ReadinessReport {
    let ttl = Duration::from_millis(state.settings.readiness.cache_ms);
    let mut slot = state.readiness_cache.0.lock().await;
    if let Some((at, report)) = slot.as_ref()
        && at.elapsed() < ttl
    {
        return report.clone();
    }
    let report = check(state).await;
    *slot = Some((Instant::now(), report.clone()));
    report
}

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

pub async fn check(state: &AppState) -> ReadinessReport {
    state.metrics.readiness_checks.inc();
    let timeout = state.settings.readiness.check_timeout();
    let schema_probe = async {
        tokio::time::timeout(timeout, db::schema_state(&state.db))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {} ms", timeout.as_millis()))
            .and_then(|r| r)
    };
    let (schema, rabbitmq, redis, s3, clamd, oidc, kms) = tokio::join!(
        schema_probe,
        probe(timeout, state.broker.check()),
        probe(timeout, state.cache.check()),
        probe(timeout, state.storage.check()),
        probe(timeout, state.clamd.ping()),
        probe(timeout, async { state.oidc.fetch().await.map(|_| ()) }),
        probe(timeout, state.keys.kms.check()),
    );

    // The schema query doubles as the PostgreSQL probe.
    let (postgres, schema_report) = match schema {
        Ok(schema_state) => (
            Ok(()),
            SchemaReport {
                ready: schema_state.is_ready(),
                expected_version: db::expected_version(),
                detail: schema_state.describe(),
            },
        ),
        Err(e) => {
            let detail = format!("{e:#}");
            (
                Err(detail),
                SchemaReport {
                    ready: false,
                    expected_version: db::expected_version(),
                    detail: "unknown: PostgreSQL is unreachable".into(),
                },
            )
        }
    };
    state.readiness_transitions.record(
        "schema",
        if schema_report.ready {
            DependencyStatus::Up
        } else {
            DependencyStatus::Down
        },
        Some(&schema_report.detail),
    );

    let required: &[&str] = match state.role {
        Role::Serve => &["postgres"],
        Role::Worker => &["postgres", "rabbitmq"],
    };
    let mut dependencies = BTreeMap::new();
    let mut ready = schema_report.ready;
    for (name, result) in [
        ("postgres", postgres),
        ("rabbitmq", rabbitmq),
        ("redis", redis),
        ("s3", s3),
        ("clamd", clamd),
        ("oidc", oidc),
        ("kms", kms),
    ] {
        let is_required = required.contains(&name);
        let (status, detail) = match result {
            Ok(()) => (DependencyStatus::Up, None),
            Err(detail) => (DependencyStatus::Down, Some(detail)),
        };
        if status == DependencyStatus::Down && is_required {
            ready = false;
        }
        state
            .readiness_transitions
            .record(name, status, detail.as_deref());
        state
            .metrics
            .dependency_up
            .get_or_create(&crate::metrics::DependencyLabels {
                dependency: name.to_owned(),
            })
            .set(i64::from(status == DependencyStatus::Up));
        dependencies.insert(
            name.to_owned(),
            DependencyReport {
                status,
                required: is_required,
                detail,
            },
        );
    }
    ReadinessReport {
        status: if ready { "ready" } else { "not_ready" }.into(),
        role: state.role.as_str().into(),
        schema: schema_report,
        dependencies,
        integrations: BTreeMap::from([(
            "bureau".to_owned(),
            state.bureau.breaker.state().as_str().to_owned(),
        )]),
    }
}
