//! The compliance and admin pages: the audit search (with the chain's verification) and its
//! CSV export, and the admin's agents, dead-letter depths and readiness — no borrower PII.

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::pages::{checked, finish, non_empty};
use super::view::page;
use crate::auth::{Actor, Role, SideEffects};
use crate::error::AppError;
use crate::http::auth::middleware::SessionContext;
use crate::http::edge::RequestId;
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    entity_type: Option<String>,
    entity_id: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    verify: Option<String>,
}

/// A time from the form: RFC 3339, or the `datetime-local` input's `YYYY-MM-DDTHH:MM` (UTC).
fn form_time(value: Option<&str>) -> Result<Option<OffsetDateTime>, AppError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let with_zone = if value.len() == 16 {
        format!("{value}:00Z")
    } else {
        value.to_owned()
    };
    OffsetDateTime::parse(&with_zone, &Rfc3339)
        .map(Some)
        .map_err(|_| crate::http::support::malformed("times are YYYY-MM-DDTHH:MM (UTC)"))
}

impl AuditQuery {
    fn filter(&self) -> Result<crate::audit::PageFilter, AppError> {
        Ok(crate::audit::PageFilter {
            entity_type: non_empty(&self.entity_type).map(str::to_owned),
            entity_id: non_empty(&self.entity_id)
                .map(Uuid::parse_str)
                .transpose()
                .map_err(|_| crate::http::support::malformed("the entity id is not a UUID"))?,
            actor: non_empty(&self.actor).map(str::to_owned),
            action: non_empty(&self.action).map(str::to_owned),
            from: form_time(non_empty(&self.from))?,
            to: form_time(non_empty(&self.to))?,
            before: non_empty(&self.cursor).and_then(|c| c.parse().ok()),
        })
    }

    fn href(&self, base: &str, cursor: Option<&str>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("entity_type", &self.entity_type),
            ("entity_id", &self.entity_id),
            ("actor", &self.actor),
            ("action", &self.action),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if let Some(v) = non_empty(v) {
                q.append_pair(k, v);
            }
        }
        if let Some(cursor) = cursor {
            q.append_pair("cursor", cursor);
        }
        format!("{base}?{}", q.finish())
    }
}

/// Compliance's audit search, with the chain's verification on request.
pub async fn audit(
    State(state): State<AppState>,
    actor: Actor,
    Extension(session): Extension<SessionContext>,
    side_effects: SideEffects,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = query.unwrap_or_default();
    let result = async {
        let filter = query.filter()?;
        let (rows, next_cursor) = crate::audit::search(&state.db, &actor, &filter, 100).await?;
        // Walking the whole chain is costly: only from a console page, never a link from
        // elsewhere.
        let chain = if checked(&query.verify) {
            side_effects.require()?;
            let (checked_rows, broken) = crate::audit::verify(&state.db).await?;
            Some(json!({
                "entries": checked_rows,
                "intact": broken.is_none(),
                "broken_at": broken.map(|(seq, why)| format!("entry {seq}: {why}")),
            }))
        } else {
            None
        };
        let entries: Vec<Value> = rows.iter().map(audit_row).collect();
        Ok(page(
            StatusCode::OK,
            "audit.html",
            &actor,
            &session,
            json!({
                "entries": entries,
                "query": {
                    "entity_type": query.entity_type, "entity_id": query.entity_id,
                    "actor": query.actor, "action": query.action,
                    "from": query.from, "to": query.to,
                },
                "next": next_cursor.map(|c| query.href("/console/audit", Some(&c))),
                "csv": query.href("/console/audit.csv", None),
                "verify": query.href("/console/audit", None) + "&verify=1",
                "chain": chain,
            }),
        ))
    }
    .await;
    finish(result, &actor, &session)
}

fn audit_row(row: &crate::audit::ListedRow) -> Value {
    json!({
        "seq": row.seq,
        "at": row.at.format(&Rfc3339).unwrap_or_default(),
        "actor": row.actor_subject,
        "roles": row.actor_roles.join(" "),
        "action": row.action,
        "entity_type": row.entity_type,
        "entity_id": row.entity_id,
        "request_id": row.request_id,
        "details": row.details.to_string(),
    })
}

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR) gets a
/// leading `'` (OWASP's CSV-injection advice): a borrower's name never runs in an
/// examiner's spreadsheet.
pub fn neutralise_cell(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    }
}

/// The audit search as CSV (up to 10,000 entries, newest first); the export is audited.
pub async fn audit_csv(
    State(state): State<AppState>,
    actor: Actor,
    Extension(session): Extension<SessionContext>,
    side_effects: SideEffects,
    request_id: RequestId,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = query.unwrap_or_default();
    let result = async {
        side_effects.require()?;
        let filter = query.filter()?;
        let rows = crate::audit::export(&state.db, &actor, &filter, 10_000, &request_id.0).await?;
        let mut out = csv::Writer::from_writer(Vec::new());
        let header = [
            "seq",
            "at",
            "actor",
            "roles",
            "action",
            "entity_type",
            "entity_id",
            "request_id",
            "details",
        ];
        let write = |out: &mut csv::Writer<Vec<u8>>, cells: &[String]| {
            out.write_record(cells.iter().map(|c| neutralise_cell(c)))
                .map_err(|e| AppError::Internal(e.into()))
        };
        write(&mut out, &header.map(str::to_owned))?;
        for row in &rows {
            let cells = [
                row.seq.to_string(),
                row.at.format(&Rfc3339).unwrap_or_default(),
                row.actor_subject.clone(),
                row.actor_roles.join(" "),
                row.action.clone(),
                row.entity_type.clone(),
                row.entity_id.to_string(),
                row.request_id.clone().unwrap_or_default(),
                row.details.to_string(),
            ];
            write(&mut out, &cells)?;
        }
        let body = out
            .into_inner()
            .map_err(|e| AppError::Internal(anyhow::anyhow!("{e}")))?;
        Ok((
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"audit.csv\""),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body,
        )
            .into_response())
    }
    .await;
    finish(result, &actor, &session)
}

/// The admin page: agents (disable / enable), dead-letter depths and readiness — no PII.
pub async fn admin(
    State(state): State<AppState>,
    actor: Actor,
    Extension(session): Extension<SessionContext>,
) -> Response {
    let result = async {
        if !actor.has(Role::Admin) {
            return Err(AppError::forbidden());
        }
        let agents = crate::agents::ops::list(&state, &actor, None, 200).await?;
        let prefix = &state.settings.rabbitmq.prefix;
        // Every consumer's depth at once: a broker that does not answer costs one timeout.
        let broker = &state.broker;
        let queues: Vec<Value> =
            futures::future::join_all(crate::events::SUBSCRIPTIONS.iter().map(
                |(consumer, _)| async move {
                    let depth = tokio::time::timeout(
                        std::time::Duration::from_secs(2),
                        crate::queue::dlq::depth(broker, prefix, consumer),
                    )
                    .await;
                    json!({
                        "consumer": consumer,
                        "depth": match depth { Ok(Ok(n)) => Some(n), _ => None },
                    })
                },
            ))
            .await;
        let readiness = crate::state::readiness::cached(&state).await;
        let dependencies: Vec<Value> = readiness
            .dependencies
            .iter()
            .map(|(name, d)| json!({"name": name, "status": d.status, "required": d.required}))
            .collect();
        Ok(page(
            StatusCode::OK,
            "admin.html",
            &actor,
            &session,
            json!({
                "agents": agents.items,
                "queues": queues,
                "ready": readiness.is_ready(),
                "schema_ready": readiness.schema.ready,
                "dependencies": dependencies,
                "integrations": readiness.integrations,
            }),
        ))
    }
    .await;
    finish(result, &actor, &session)
}

#[derive(Debug, Default, Deserialize)]
pub struct CursorQuery {
    cursor: Option<String>,
}

/// Retention (compliance, admin): the report — what each rule would dispose of now and
/// within 30 days, what holds keep — and the holds in force, with lift for compliance.
pub async fn retention(
    State(state): State<AppState>,
    actor: Actor,
    Extension(session): Extension<SessionContext>,
    query: Result<Query<CursorQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = query.unwrap_or_default();
    let result = async {
        let report = crate::retention::ops::report(&state, &actor).await?;
        let holds = crate::retention::ops::list(
            &state,
            &actor,
            crate::db::Page {
                limit: 100,
                after: non_empty(&query.cursor).map(str::to_owned),
            },
        )
        .await?;
        let next = holds.next_cursor.as_ref().map(|c| {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("cursor", c);
            format!("/console/retention?{}", q.finish())
        });
        Ok(page(
            StatusCode::OK,
            "retention.html",
            &actor,
            &session,
            json!({ "report": report, "holds": holds.items, "next": next }),
        ))
    }
    .await;
    finish(result, &actor, &session)
}

/// The borrower-file export of a loan (write scope, step-up: a stale sign-in is sent to
/// `/auth/reauth` and back to the loan page).
pub async fn export(
    State(state): State<AppState>,
    actor: Actor,
    Extension(session): Extension<SessionContext>,
    side_effects: SideEffects,
    request_id: RequestId,
    axum::extract::Path(id): axum::extract::Path<Uuid>,
) -> Response {
    match crate::retention::export::prepare(&state, &actor, id, side_effects, &request_id.0).await {
        Ok(export) => crate::retention::export::response(state, export),
        Err(e) => super::view::error_page(e, Some((&actor, &session))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_others_kept() {
        for cell in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise_cell(cell), format!("'{cell}"));
        }
        for cell in ["Ana", "1", "", "a=b"] {
            assert_eq!(neutralise_cell(cell), cell);
        }
    }

    #[test]
    fn form_times_take_the_datetime_local_shape() {
        assert!(form_time(Some("2026-12-05T10:30")).unwrap().is_some());
        assert!(form_time(Some("2026-12-05T10:30:00Z")).unwrap().is_some());
        assert!(form_time(Some("yesterday")).is_err());
        assert!(form_time(None).unwrap().is_none());
    }
}
