//! The loan operations: each opens its own transaction (or works in the caller's, named
//! `tx`) and writes the audit row and the outbox event with the change.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::store::{self, LoanRow, NewLoanRow};
use super::{
    HistoryItem, HistoryList, Loan, LoanList, LoanStatus, LoanType, Mover, NeedsAttention, NewLoan,
    TransitionRequest, may_move,
};
use crate::audit;
use crate::auth::{Actor, ReadScope, Role};
use crate::crypto::DataKey;
use crate::crypto::field::{self, Location};
use crate::db::{Page, next_page, outbox};
use crate::domain::money::Money;
use crate::domain::rfc3339;
use crate::error::{AppError, ErrorCode, FieldError};
use crate::events::Event;
use crate::leads::{Address, validate_address};
use crate::state::AppState;

fn property_at(id: Uuid) -> Location<'static> {
    Location {
        table: "loans",
        column: "property_enc",
        row: id,
    }
}

fn reason_at(loan: Uuid) -> Location<'static> {
    Location {
        table: "loan_status_history",
        column: "reason_enc",
        row: loan,
    }
}

/// The loan as `actor` may see it: the property's first line masked for masked-only roles.
pub fn render(row: &LoanRow, key: &DataKey, actor: &Actor) -> Result<Loan, AppError> {
    let plain = field::decrypt(key, property_at(row.id), &row.property_enc)
        .map_err(|e| anyhow::anyhow!("decrypting loans.property_enc: {e}"))?;
    let mut property: Address =
        serde_json::from_slice(&plain).map_err(|e| anyhow::anyhow!("loans.property_enc: {e}"))?;
    if actor.masks(&row.owner_subject, row.team.as_deref()) {
        property.line1 = "***".into();
        property.line2 = None;
    }
    Ok(Loan {
        id: row.id,
        lead_id: row.lead_id,
        loan_type: row.loan_type.clone(),
        amount: row.amount.to_string(),
        property,
        status: row.status,
        version: row.version,
        needs_attention: row
            .needs_attention_reason
            .clone()
            .map(|reason| NeedsAttention {
                reason,
                since: row.needs_attention_since.map(rfc3339).unwrap_or_default(),
            }),
        los_loan_id: row.los_loan_id.clone(),
        los_milestone: row.los_milestone.clone(),
        owner: row.owner_subject.clone(),
        team: row.team.clone(),
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
    })
}

/// The lead (borrower file) of a loan the caller can see; someone else's loan is 404.
pub async fn visible_loan(
    conn: &mut PgConnection,
    loan: Uuid,
    actor: &Actor,
) -> Result<Uuid, AppError> {
    store::lead_of(conn, loan, &actor.read_scope())
        .await?
        .ok_or_else(AppError::not_found)
}

/// As [`visible_loan`], and the caller may change it: visible but not writable is 403.
pub async fn writable_loan(
    conn: &mut PgConnection,
    loan: Uuid,
    actor: &Actor,
) -> Result<Uuid, AppError> {
    let lead = visible_loan(conn, loan, actor).await?;
    let write_scope = actor.write_scope()?;
    store::lead_of(conn, loan, &write_scope)
        .await?
        .ok_or_else(AppError::forbidden)?;
    Ok(lead)
}

/// `POST /v1/loans`: validate, then [`create_valid`].
pub async fn create(
    state: &AppState,
    actor: &Actor,
    input: NewLoan,
    request_id: &str,
) -> Result<Loan, AppError> {
    let write_scope = actor.write_scope()?;
    let mut errors = Vec::new();
    let amount = match Money::parse(&input.amount.0) {
        Ok(m) if m.value() > Decimal::ZERO => Some(m),
        Ok(_) => {
            errors.push(FieldError {
                field: "amount".into(),
                message: "must be more than zero".into(),
            });
            None
        }
        Err(message) => {
            errors.push(FieldError {
                field: "amount".into(),
                message: message.into(),
            });
            None
        }
    };
    let property = validate_address(&mut errors, "property", input.property);
    if !errors.is_empty() {
        return Err(AppError::validation(errors));
    }
    let amount = amount.ok_or_else(|| anyhow::anyhow!("validated amount missing"))?;
    let valid = ValidLoan {
        lead_id: input.lead_id,
        loan_type: input.loan_type,
        amount,
        property,
    };
    let (row, key) = create_valid(state, actor, &write_scope, &valid, request_id).await?;
    render(&row, &key, actor)
}

/// A loan whose fields passed validation.
pub struct ValidLoan {
    pub lead_id: Uuid,
    pub loan_type: LoanType,
    pub amount: Money,
    pub property: Address,
}

/// Create a validated loan for a lead within `write_scope`; the row and its audit entry in
/// one transaction.
pub async fn create_valid(
    state: &AppState,
    actor: &Actor,
    write_scope: &ReadScope,
    loan: &ValidLoan,
    request_id: &str,
) -> Result<(LoanRow, Arc<DataKey>), AppError> {
    let mut tx = state.db.begin().await?;
    // The lead must be one the caller may change; an invisible lead is a field error.
    let Some(crate::leads::LeadOwner {
        owner_subject: owner,
        team,
    }) = crate::leads::ops::owner_for_share(&mut tx, loan.lead_id, write_scope).await?
    else {
        return Err(AppError::validation(vec![FieldError {
            field: "lead_id".into(),
            message: "no such lead".into(),
        }]));
    };
    let id = Uuid::now_v7();
    let key = state.file_key(loan.lead_id).await?;
    let property_enc = field::encrypt(
        &key,
        property_at(id),
        &serde_json::to_vec(&loan.property).unwrap_or_default(),
    );
    store::insert(
        &mut tx,
        &NewLoanRow {
            id,
            lead_id: loan.lead_id,
            owner_subject: &owner,
            team: team.as_deref(),
            loan_type: loan.loan_type,
            amount: loan.amount.value(),
            property_enc: &property_enc,
        },
    )
    .await?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: loan.lead_id,
            actor,
            action: "loan.created",
            entity_type: "loan",
            entity_id: id,
            request_id: Some(request_id),
            details: json!({ "lead_id": loan.lead_id, "status": "draft" }),
        },
    )
    .await?;
    let row = store::fetch(&mut tx, id, &ReadScope::All, false)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the loan just written is missing"))?;
    tx.commit().await?;
    Ok((row, key))
}

/// One loan the caller can see.
pub async fn get(state: &AppState, actor: &Actor, id: Uuid) -> Result<Loan, AppError> {
    let mut conn = state.db.acquire().await?;
    let row = store::fetch(&mut conn, id, &actor.read_scope(), false)
        .await?
        .ok_or_else(AppError::not_found)?;
    drop(conn);
    let key = state.file_key(row.lead_id).await?;
    render(&row, &key, actor)
}

/// Every status with its count (0 where the scope has none).
fn by_status(counts: Vec<store::StatusCount>) -> BTreeMap<String, i64> {
    let mut by_status: BTreeMap<String, i64> = LoanStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for row in counts {
        by_status.insert(row.status.as_str().to_owned(), row.count);
    }
    by_status
}

/// The caller's loans per status (the console's pipeline shows them above its own list).
pub async fn status_counts(
    state: &AppState,
    actor: &Actor,
) -> Result<BTreeMap<String, i64>, AppError> {
    let mut conn = state.db.acquire().await?;
    let counts = store::status_counts(&mut conn, &actor.read_scope()).await?;
    Ok(by_status(counts))
}

/// The dashboard: status counts and a page of loans, read in one snapshot.
pub async fn dashboard(
    state: &AppState,
    actor: &Actor,
    status: Option<LoanStatus>,
    page: Page<Uuid>,
) -> Result<LoanList, AppError> {
    let scope = actor.read_scope();
    let mut tx = state.db.begin().await?;
    // Counts and page from one snapshot: strongly consistent, as the brief asks.
    crate::db::read_only_snapshot(&mut tx).await?;
    let counts = store::status_counts(&mut tx, &scope).await?;
    let mut rows = store::page(&mut tx, &scope, status, page.after, page.limit + 1).await?;
    tx.commit().await?;

    let status_counts = by_status(counts);
    let next_cursor = next_page(&mut rows, page.limit, |r| r.id.to_string());
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let key = state.file_key(row.lead_id).await?;
        items.push(render(row, &key, actor)?);
    }
    Ok(LoanList {
        items,
        next_cursor,
        status_counts,
    })
}

/// Who `actor` is to a loan owned by `owner` in `team`, for the transition matrix: a
/// manager of its team, its own agent, or nobody who may move it.
pub fn mover_of(actor: &Actor, owner: &str, team: Option<&str>) -> Option<Mover> {
    let in_team = actor.team.is_some() && team == actor.team.as_deref();
    if actor.has(Role::Manager) && in_team {
        Some(Mover::Manager)
    } else if actor.has(Role::Agent) && owner == actor.subject {
        Some(Mover::Agent)
    } else {
        None
    }
}

/// The statuses `actor` may move `loan` to now: the machine allows the move and the role
/// matrix gives it to the caller (what `transition` checks, for a page to offer).
pub fn moves_for(actor: &Actor, loan: &Loan) -> Vec<LoanStatus> {
    let Some(mover) = mover_of(actor, &loan.owner, loan.team.as_deref()) else {
        return Vec::new();
    };
    LoanStatus::ALL
        .into_iter()
        .filter(|to| loan.status.can_move_to(*to) && may_move(mover, loan.status, *to))
        .collect()
}

/// Move a loan through its status machine: 404 for a loan the caller cannot see, 409 for a
/// move the machine never allows, then 403 for a move the caller's role may not make, then
/// the `If-Match` precondition — `if_match` is the header's parse, checked at that point so
/// the answers keep this order.
pub async fn transition(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    if_match: Result<i64, AppError>,
    request: &TransitionRequest,
    request_id: &str,
) -> Result<Loan, AppError> {
    if let Some(reason) = &request.reason
        && reason.chars().count() > 1000
    {
        return Err(AppError::validation(vec![FieldError {
            field: "reason".into(),
            message: "must be at most 1000 characters".into(),
        }]));
    }
    let mut tx = state.db.begin().await?;
    let row = store::fetch(&mut tx, id, &actor.read_scope(), true)
        .await?
        .ok_or_else(AppError::not_found)?;
    let from = row.status;
    let to = request.status;
    if !from.can_move_to(to) {
        return Err(AppError::client(
            StatusCode::CONFLICT,
            ErrorCode::InvalidTransition,
            format!(
                "a loan cannot move from {} to {}",
                from.as_str(),
                to.as_str()
            ),
        ));
    }
    let mover = mover_of(actor, &row.owner_subject, row.team.as_deref());
    if !mover.is_some_and(|m| may_move(m, from, to)) {
        return Err(AppError::forbidden());
    }
    if if_match? != row.version {
        return Err(AppError::client(
            StatusCode::PRECONDITION_FAILED,
            ErrorCode::PreconditionFailed,
            "the loan changed since you read it; read it again",
        ));
    }
    let key = state.file_key(row.lead_id).await?;
    let moving = Moving {
        id: row.id,
        lead_id: row.lead_id,
        status: row.status,
    };
    apply_transition(
        &mut tx,
        &key,
        &moving,
        crate::loans::ops::Step {
            to,
            reason: request.reason.as_deref(),
        },
        actor,
        request_id,
    )
    .await?;
    let row = store::fetch(&mut tx, id, &ReadScope::All, false)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the loan just moved is missing"))?;
    tx.commit().await?;
    render(&row, &key, actor)
}

/// The loan a transition applies to.
pub struct Moving {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub status: LoanStatus,
}

/// Where a transition goes, and why (shown in the history; sealed at rest).
#[derive(Clone, Copy)]
pub struct Step<'a> {
    pub to: LoanStatus,
    pub reason: Option<&'a str>,
}

/// The transition's writes, in the caller's transaction: the loan, its history row, the
/// audit row and the `loan.status.changed` event — all or nothing.
pub async fn apply_transition(
    tx: &mut PgConnection,
    key: &DataKey,
    row: &Moving,
    step: Step<'_>,
    actor: &Actor,
    request_id: &str,
) -> Result<(), AppError> {
    let Step { to, reason } = step;
    let reason_enc = reason.map(|r| field::encrypt(key, reason_at(row.id), r.as_bytes()));
    store::record_transition(
        tx,
        row.id,
        row.status,
        to,
        &actor.subject,
        reason_enc.as_deref(),
    )
    .await?;
    audit::record(
        tx,
        audit::Entry {
            chain: row.lead_id,
            actor,
            action: "loan.status_changed",
            entity_type: "loan",
            entity_id: row.id,
            request_id: Some(request_id),
            details: json!({ "from": row.status.as_str(), "to": to.as_str(), "reason_given": reason.is_some() }),
        },
    )
    .await?;
    outbox::enqueue(
        tx,
        &Event::LoanStatusChanged {
            loan_id: row.id,
            old_status: row.status,
            new_status: to,
        },
        Some(request_id),
    )
    .await?;
    Ok(())
}

/// The loan's status history, oldest first; reasons hidden from masked-only callers.
pub async fn history(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    page: Page<i64>,
) -> Result<HistoryList, AppError> {
    let mut conn = state.db.acquire().await?;
    let row = store::fetch(&mut conn, id, &actor.read_scope(), false)
        .await?
        .ok_or_else(AppError::not_found)?;
    let mut rows = store::history(&mut conn, id, page.after, page.limit + 1).await?;
    let next_cursor = next_page(&mut rows, page.limit, |r| r.id.to_string());
    drop(conn);
    let key = state.file_key(row.lead_id).await?;
    let masked = actor.masks(&row.owner_subject, row.team.as_deref());
    let mut items = Vec::with_capacity(rows.len());
    for transition in rows {
        let reason = match transition.reason_enc {
            Some(enc) => Some(
                String::from_utf8(
                    field::decrypt(&key, reason_at(id), &enc)
                        .map_err(|e| anyhow::anyhow!("decrypting a transition reason: {e}"))?,
                )
                .unwrap_or_default(),
            ),
            None => None,
        };
        items.push(HistoryItem {
            from: transition.from_status.as_str().to_owned(),
            to: transition.to_status.as_str().to_owned(),
            actor: transition.actor_subject,
            // Reasons are free text about the borrower: not for masked-only callers.
            reason: if masked {
                reason.map(|_| crate::domain::mask::HIDDEN.to_owned())
            } else {
                reason
            },
            at: rfc3339(transition.at),
        });
    }
    Ok(HistoryList { items, next_cursor })
}

/// The owner and team of a loan: whom its PII is masked for.
pub async fn owner_and_team(
    conn: &mut PgConnection,
    loan: Uuid,
) -> Result<super::LoanOwner, AppError> {
    Ok(store::owner_and_team(conn, loan).await?)
}

/// A borrower's credit pull failed for good: flag the lead's open loans for their agents,
/// each with its `loan.needs_attention` event, in the caller's transaction. Handed to the
/// credit worker by the composition root (`leads::credit::worker::FlagOpenLoans`).
pub fn flag_open_loans<'a>(
    tx: &'a mut PgConnection,
    lead: Uuid,
    reason: &'a str,
) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        for loan in store::flag_open_loans_of_lead(&mut *tx, lead, reason).await? {
            outbox::enqueue(
                &mut *tx,
                &Event::LoanNeedsAttention {
                    loan_id: loan,
                    reason: reason.to_owned(),
                },
                None,
            )
            .await?;
        }
        Ok(())
    })
}

/// Disposal (crate::retention): blank what this aggregate keeps of the file.
pub async fn blank_for_disposal(
    tx: &mut sqlx::PgConnection,
    leads: &[Uuid],
) -> Result<(), sqlx::Error> {
    store::blank_for_disposal(tx, leads).await
}
