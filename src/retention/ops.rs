//! Legal holds and the retention report. Holds are compliance's: placing and lifting are
//! audited on the held lead or loan (`legal_hold.placed`, `legal_hold.lifted`, the hold's id
//! in `details`), in the borrower file's audit chain.

use serde_json::json;
use uuid::Uuid;

use super::store::{self, HoldRow, NewHoldRow};
use super::{
    BackupReport, HeldEntity, LegalHold, LegalHoldList, NewLegalHold, RetentionReport, RuleReport,
    reason_at, reference_at,
};
use crate::audit;
use crate::auth::{Actor, Role};
use crate::crypto::field;
use crate::db::{Page, next_page};
use crate::domain::rfc3339;
use crate::error::{AppError, FieldError};
use crate::state::AppState;

fn compliance_only(actor: &Actor) -> Result<(), AppError> {
    if actor.has(Role::Compliance) {
        Ok(())
    } else {
        Err(AppError::forbidden())
    }
}

fn compliance_or_admin(actor: &Actor) -> Result<(), AppError> {
    if actor.has(Role::Compliance) || actor.has(Role::Admin) {
        Ok(())
    } else {
        Err(AppError::forbidden())
    }
}

fn check(input: &NewLegalHold) -> Result<(String, Option<String>), AppError> {
    let mut errors = Vec::new();
    let reason = input.reason.trim();
    if reason.is_empty() {
        errors.push(FieldError {
            field: "reason".into(),
            message: "is required: why the file must be kept".into(),
        });
    }
    crate::requests::check_text("reason", reason, false, &mut errors);
    let reference = input
        .reference
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if reference.is_some_and(|r| r.chars().count() > 200) {
        errors.push(FieldError {
            field: "reference".into(),
            message: "must be at most 200 characters".into(),
        });
    }
    if errors.is_empty() {
        Ok((reason.to_owned(), reference.map(str::to_owned)))
    } else {
        Err(AppError::validation(errors))
    }
}

/// The hold as `actor` may see it: an admin who is not also compliance sees the reason and
/// reference masked (they can name people).
async fn render(state: &AppState, row: &HoldRow, actor: &Actor) -> Result<LegalHold, AppError> {
    let entity_type = if row.entity_type == "loan" {
        HeldEntity::Loan
    } else {
        HeldEntity::Lead
    };
    let (reason, reference) = if actor.has(Role::Compliance) {
        let key = state.file_key(row.lead_id).await?;
        let open = |at, sealed: &[u8]| {
            field::decrypt(&key, at, sealed)
                .map(|p| String::from_utf8_lossy(&p).into_owned())
                .map_err(|e| {
                    AppError::Internal(anyhow::anyhow!("a legal hold does not decrypt: {e}"))
                })
        };
        let reason = open(reason_at(row.id), &row.reason_enc)?;
        let reference = match &row.reference_enc {
            Some(sealed) => Some(open(reference_at(row.id), sealed)?),
            None => None,
        };
        (reason, reference)
    } else {
        (
            "***".to_owned(),
            row.reference_enc.as_ref().map(|_| "***".to_owned()),
        )
    };
    Ok(LegalHold {
        id: row.id,
        entity_type,
        entity_id: row.entity_id,
        reason,
        reference,
        placed_by: row.placed_by.clone(),
        placed_at: rfc3339(row.placed_at),
    })
}

/// Place a hold on a lead or a loan (compliance): the whole borrower file is kept while it
/// is in force. 404 for an unknown lead or loan.
pub async fn place(
    state: &AppState,
    actor: &Actor,
    input: &NewLegalHold,
    request_id: &str,
) -> Result<LegalHold, AppError> {
    compliance_only(actor)?;
    let (reason, reference) = check(input)?;
    let mut tx = state.db.begin().await?;
    let lead_id = match input.entity_type {
        HeldEntity::Lead => {
            crate::leads::ops::visible_lead(&mut tx, input.entity_id, actor).await?;
            input.entity_id
        }
        HeldEntity::Loan => {
            crate::loans::ops::visible_loan(&mut tx, input.entity_id, actor).await?
        }
    };
    // Against a disposal running now: it locks the lead `for update` and checks for holds
    // after; a file it disposed first is gone.
    if !store::lock_file_for_hold(&mut tx, lead_id).await? {
        return Err(AppError::not_found());
    }
    let id = Uuid::now_v7();
    let key = state.file_key(lead_id).await?;
    let reason_enc = field::encrypt(&key, reason_at(id), reason.as_bytes());
    let reference_enc = reference
        .as_deref()
        .map(|r| field::encrypt(&key, reference_at(id), r.as_bytes()));
    store::insert(
        &mut tx,
        &NewHoldRow {
            id,
            entity_type: input.entity_type.as_str(),
            entity_id: input.entity_id,
            lead_id,
            reason_enc: &reason_enc,
            reference_enc: reference_enc.as_deref(),
            placed_by: &actor.subject,
        },
    )
    .await?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: lead_id,
            actor,
            action: "legal_hold.placed",
            entity_type: input.entity_type.as_str(),
            entity_id: input.entity_id,
            request_id: Some(request_id),
            details: json!({ "hold_id": id }),
        },
    )
    .await?;
    let row = store::active_for_update(&mut tx, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the hold just written is missing"))?;
    tx.commit().await?;
    render(state, &row, actor).await
}

/// Lift a hold in force (compliance); 404 for an unknown or already lifted hold.
pub async fn lift(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    request_id: &str,
) -> Result<(), AppError> {
    compliance_only(actor)?;
    let mut tx = state.db.begin().await?;
    let row = store::active_for_update(&mut tx, id)
        .await?
        .ok_or_else(AppError::not_found)?;
    store::lift(&mut tx, id, &actor.subject).await?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: row.lead_id,
            actor,
            action: "legal_hold.lifted",
            entity_type: &row.entity_type,
            entity_id: row.entity_id,
            request_id: Some(request_id),
            details: json!({ "hold_id": id }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The holds in force, newest first (compliance and admin).
pub async fn list(
    state: &AppState,
    actor: &Actor,
    page: Page<String>,
) -> Result<LegalHoldList, AppError> {
    compliance_or_admin(actor)?;
    let before = match page.after.as_deref() {
        // As every list answers a cursor it did not give: 400 `malformed_request`.
        Some(cursor) => Some(crate::loans::pipeline::parse_cursor(cursor).ok_or_else(|| {
            AppError::client(
                axum::http::StatusCode::BAD_REQUEST,
                crate::error::ErrorCode::MalformedRequest,
                "`cursor` is not valid",
            )
        })?),
        None => None,
    };
    let mut conn = state.db.acquire().await?;
    let mut rows = store::active_page(&mut conn, before, page.limit + 1).await?;
    drop(conn);
    let next_cursor = next_page(&mut rows, page.limit, |r| {
        format!("{}.{}", r.placed_at.unix_timestamp_nanos() / 1000, r.id)
    });
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        items.push(render(state, row, actor).await?);
    }
    Ok(LegalHoldList { items, next_cursor })
}

/// What each rule would dispose of now and within 30 days, and what holds keep (compliance
/// and admin; `loanfolio admin retention report` prints the same). Counts only: no PII.
pub async fn report(state: &AppState, actor: &Actor) -> Result<RetentionReport, AppError> {
    compliance_or_admin(actor)?;
    report_unchecked(state).await
}

/// The report without a caller (the CLI, run by an operator on the host).
pub async fn report_unchecked(state: &AppState) -> Result<RetentionReport, AppError> {
    let settings = &state.settings.retention;
    let mut conn = state.db.acquire().await?;
    let mut rules = Vec::new();
    for rule in crate::config::RETENTION_RULES {
        let days = settings.days(rule.rule);
        let counts = store::rule_counts(
            &mut conn,
            rule.rule,
            i32::try_from(days).unwrap_or(i32::MAX),
        )
        .await?;
        rules.push(RuleReport {
            rule: rule.rule.to_owned(),
            category: rule.category.to_owned(),
            retain_days: days,
            basis: rule.basis.to_owned(),
            due_now: counts.due_now,
            due_next_30_days: counts.due_next_30_days,
            held: counts.held,
        });
    }
    let exposure = store::backup_exposure(&mut conn).await?;
    let epoch = time::Duration::days(i64::from(settings.key_epoch_days));
    let backups = BackupReport {
        disposed_still_in_backups: exposure.still_in_backups,
        key_epoch_days: settings.key_epoch_days,
        last_key_epoch_at: exposure.last_epoch_at.map(rfc3339),
        // With the local provider, backups carry the master key file: no epoch reaches them.
        gone_from_backups_by: (exposure.still_in_backups > 0
            && state.keys.kms.provider_name() != "local")
            .then(|| exposure.last_epoch_at.or(exposure.oldest_disposal))
            .flatten()
            .map(|from| rfc3339(from + epoch)),
    };
    Ok(RetentionReport {
        rules,
        backups,
        disposal_enabled: settings.enabled,
        generated_at: rfc3339(time::OffsetDateTime::now_utc()),
    })
}
