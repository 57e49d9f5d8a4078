//! The readiness check over every client of the state (the report's shape and the caches
//! are `crate::readiness`).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use super::{AppState, Role};
use crate::db;
use crate::readiness::{DependencyReport, DependencyStatus, ReadinessReport, SchemaReport};

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

/// The schema's report from the schema query, which doubles as the PostgreSQL probe.
fn schema_report(schema: anyhow::Result<db::SchemaState>) -> (Result<(), String>, SchemaReport) {
    match schema {
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
    }
}

/// One dependency's line of the report; its transition logged and its gauge set.
fn dependency_report(
    state: &AppState,
    name: &'static str,
    result: Result<(), String>,
    required: bool,
) -> DependencyReport {
    let (status, detail) = match result {
        Ok(()) => (DependencyStatus::Up, None),
        Err(detail) => (DependencyStatus::Down, Some(detail)),
    };
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
    DependencyReport {
        status,
        required,
        detail,
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

    let (postgres, schema_report) = schema_report(schema);
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
        let report = dependency_report(state, name, result, required.contains(&name));
        if report.status == DependencyStatus::Down && report.required {
            ready = false;
        }
        dependencies.insert(name.to_owned(), report);
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
