//! The lead operations: create (with the credit pull a consent permits), read (the SSN
//! revealed only when asked, audited), list, and update by JSON merge patch. Each opens its
//! own transaction and writes the audit row and the outbox event with the change.

use axum::http::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::fields::{at, present_fields, render, seal_lead, unseal};
use super::store::{self, ListFilter};
use super::{Lead, LeadInput, LeadList, ValidLead, merge_patch};
use crate::actor::SideEffects;
use crate::audit;
use crate::auth::{Actor, ReadScope};
use crate::crypto::field::{self};
use crate::db::{next_page, outbox};
use crate::domain::ssn::Ssn;
use crate::error::{AppError, ErrorCode, FieldError, kms_unavailable};
use crate::events::Event;
use crate::leads::credit::{Consent, PullType};
use crate::state::AppState;

fn today() -> time::Date {
    OffsetDateTime::now_utc().date()
}

/// A lead's input validated, with the credit consent it may carry (both sets of field
/// errors reported together).
pub fn validate(
    mut input: LeadInput,
) -> Result<(ValidLead, Option<(PullType, Consent)>), AppError> {
    let consent = input
        .credit_consent
        .take()
        .map(|c| c.validate(OffsetDateTime::now_utc()));
    match (input.validate(today()), consent.transpose()) {
        (Ok(lead), Ok(credit)) => Ok((lead, credit)),
        (lead, credit) => {
            let mut errors = lead.err().unwrap_or_default();
            errors.extend(credit.err().unwrap_or_default());
            Err(AppError::validation(errors))
        }
    }
}

/// Leads the caller can see with the same SSN: the blind index narrows, decryption decides.
async fn possible_duplicates(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    ssn: &Ssn,
    index: i32,
) -> Result<Vec<Uuid>, AppError> {
    let candidates = store::ssn_candidates(&state.db, index, id, &actor.read_scope()).await?;
    let mut duplicates = Vec::new();
    for candidate in candidates {
        let key = state.file_key(candidate.id).await?;
        if unseal(&key, candidate.id, "ssn_enc", &candidate.ssn_enc)?.as_deref()
            == Some(ssn.digits())
        {
            duplicates.push(candidate.id);
        }
    }
    Ok(duplicates)
}

/// The pull a consent given with a lead's input permits, queued in the lead's transaction
/// (the saga's first step: no lead with a consent is left without its pull).
async fn queue_consented_pull(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    actor: &Actor,
    lead: Uuid,
    credit: Option<&(PullType, Consent)>,
    request_id: &str,
) -> Result<(), AppError> {
    let Some((pull_type, consent)) = credit else {
        return Ok(());
    };
    let pull = crate::leads::credit::ops::Pull {
        lead_id: lead,
        pull_type: *pull_type,
        consent,
        kind: "new",
        based_on: None,
    };
    crate::leads::credit::ops::queue_pull(state, tx, actor, &pull, request_id).await?;
    Ok(())
}

/// `POST /v1/leads`: validate, then [`create_with_pull`].
pub async fn create_from_input(
    state: &AppState,
    actor: &Actor,
    input: LeadInput,
    request_id: &str,
) -> Result<Lead, AppError> {
    actor.write_scope()?;
    let (lead, credit) = validate(input)?;
    create_with_pull(state, actor, &lead, credit, request_id).await
}

/// Create a lead for `actor`: the data key, the encrypted row, the audit row and the
/// `lead.created` event in one transaction; then the duplicate check.
pub async fn create(
    state: &AppState,
    actor: &Actor,
    lead: &ValidLead,
    request_id: &str,
) -> Result<Lead, AppError> {
    create_with_pull(state, actor, lead, None, request_id).await
}

/// As [`create`]; with a credit consent, the pull it permits is queued in the same
/// transaction (the saga's first step: no lead with a consent is left without its pull).
pub async fn create_with_pull(
    state: &AppState,
    actor: &Actor,
    lead: &ValidLead,
    credit: Option<(
        crate::leads::credit::PullType,
        crate::leads::credit::Consent,
    )>,
    request_id: &str,
) -> Result<Lead, AppError> {
    actor.write_scope()?;
    let id = Uuid::now_v7();
    let index_key = state
        .keys
        .ssn_index_key(&state.db)
        .await
        .map_err(kms_unavailable)?;
    let mut tx = state.db.begin().await?;
    let key = state
        .keys
        .create_file_key(&mut tx, id)
        .await
        .map_err(kms_unavailable)?;
    let sealed = seal_lead(lead, id, &key, &index_key);
    store::insert(
        &mut tx,
        id,
        lead,
        &sealed,
        &actor.subject,
        actor.team.as_deref(),
    )
    .await?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: id,
            actor,
            action: "lead.created",
            entity_type: "lead",
            entity_id: id,
            request_id: Some(request_id),
            details: json!({ "fields": present_fields(lead) }),
        },
    )
    .await?;
    outbox::enqueue(
        &mut tx,
        &Event::LeadCreated { lead_id: id },
        Some(request_id),
    )
    .await?;
    queue_consented_pull(state, &mut tx, actor, id, credit.as_ref(), request_id).await?;
    let row = store::fetch(&mut tx, id, &ReadScope::All, false)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the lead just written is missing"))?;
    tx.commit().await?;

    let mut view = render(&row, &key, actor, false)?;
    if let (Some(ssn), Some(index)) = (&lead.ssn, sealed.ssn_index) {
        let duplicates = possible_duplicates(state, actor, id, ssn, index).await?;
        if !duplicates.is_empty() {
            view.possible_duplicates = Some(duplicates);
        }
    }
    Ok(view)
}

/// One lead; the full SSN only with `reveal_ssn` (needs write access to the file and a
/// recent sign-in; audited).
pub async fn get(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    reveal_ssn: bool,
    side_effects: &SideEffects,
    request_id: &str,
) -> Result<Lead, AppError> {
    let mut conn = state.db.acquire().await?;
    let row = store::fetch(&mut conn, id, &actor.read_scope(), false)
        .await?
        .ok_or_else(AppError::not_found)?;
    drop(conn);
    if reveal_ssn {
        if actor.masks(&row.owner_subject, row.team.as_deref()) {
            return Err(AppError::forbidden());
        }
        side_effects.require()?;
        actor.require_recent_auth(state.settings.auth.step_up_max_age_secs)?;
        let mut tx = state.db.begin().await?;
        audit::record(
            &mut tx,
            audit::Entry {
                chain: id,
                actor,
                action: "lead.ssn_revealed",
                entity_type: "lead",
                entity_id: id,
                request_id: Some(request_id),
                details: json!({ "fields": ["ssn"] }),
            },
        )
        .await?;
        tx.commit().await?;
    }
    let key = state.file_key(id).await?;
    render(&row, &key, actor, reveal_ssn)
}

/// The `like` pattern of a name search: lower case, the caller's `%`, `_` and `\` literal.
pub fn name_pattern(q: &str) -> String {
    format!(
        "%{}%",
        q.to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

/// The leads the caller can see, newest first.
pub async fn list(
    state: &AppState,
    actor: &Actor,
    filter: &ListFilter,
    limit: i64,
) -> Result<LeadList, AppError> {
    let mut rows = store::list(&state.db, &actor.read_scope(), filter, limit + 1).await?;
    let next_cursor = next_page(&mut rows, limit, |r| r.id.to_string());
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let key = state.file_key(row.id).await?;
        items.push(render(row, &key, actor, false)?);
    }
    Ok(LeadList { items, next_cursor })
}

/// The full, unmasked JSON of a lead, as the merge patch's target.
fn as_input_json(view: &Lead, ssn: Option<String>) -> Value {
    let mut doc = json!({
        "first_name": view.first_name,
        "last_name": view.last_name,
        "email": view.email,
        "phone": view.phone,
        "ssn": ssn,
        "date_of_birth": view.date_of_birth,
        "address": view.address,
        "annual_income": view.annual_income,
        "loan_purpose": view.loan_purpose,
        "source": view.source,
        "notes": view.notes,
        "status": view.status,
    });
    if let Value::Object(fields) = &mut doc {
        fields.retain(|_, v| !v.is_null());
    }
    doc
}

/// Update a lead with a JSON merge patch (RFC 7396): 404 for a lead the caller cannot see,
/// 403 when visible but not writable, then the `If-Match` precondition (`if_match` is the
/// header's parse, checked at that point so the answers keep this order).
pub async fn patch(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    if_match: Result<i64, AppError>,
    patch: &Value,
    request_id: &str,
) -> Result<Lead, AppError> {
    if !patch.is_object() {
        return Err(AppError::validation(vec![FieldError {
            field: String::new(),
            message: "a merge patch must be a JSON object".into(),
        }]));
    }
    let scope = actor.read_scope();
    let mut tx = state.db.begin().await?;
    let row = store::fetch(&mut tx, id, &scope, true)
        .await?
        .ok_or_else(AppError::not_found)?;
    // Visible but not writable (compliance, admin) is 403; invisible was 404 above.
    let write_scope = actor.write_scope()?;
    let writable = match &write_scope {
        ReadScope::Own(subject) => &row.owner_subject == subject,
        ReadScope::Team(team) => row.team.as_ref() == Some(team),
        ReadScope::All => true,
    };
    if !writable {
        return Err(AppError::forbidden());
    }
    if if_match? != row.version {
        return Err(AppError::client(
            StatusCode::PRECONDITION_FAILED,
            ErrorCode::PreconditionFailed,
            "the lead changed since you read it; read it again",
        ));
    }
    let key = state.file_key(id).await?;
    let current_view = render(&row, &key, actor, true)?;
    let current_ssn = unseal(&key, id, "ssn_enc", &row.ssn_enc)?;
    let before = as_input_json(&current_view, current_ssn);
    let mut merged = before.clone();
    merge_patch(&mut merged, patch);
    let input: LeadInput = serde_json::from_value(merged.clone()).map_err(patched_input_error)?;
    let (lead, credit) = validate(input)?;
    let changed = changed_fields(patch, &before, &merged);
    let index_key = state
        .keys
        .ssn_index_key(&state.db)
        .await
        .map_err(kms_unavailable)?;
    let sealed = seal_lead(&lead, id, &key, &index_key);
    store::update(&mut tx, id, &lead, &sealed).await?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: id,
            actor,
            action: "lead.updated",
            entity_type: "lead",
            entity_id: id,
            request_id: Some(request_id),
            details: json!({ "fields": changed }),
        },
    )
    .await?;
    // An update carrying a credit consent requests that pull, in the same transaction.
    queue_consented_pull(state, &mut tx, actor, id, credit.as_ref(), request_id).await?;
    let row = store::fetch(&mut tx, id, &ReadScope::All, false)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the lead just updated is missing"))?;
    tx.commit().await?;
    render(&row, &key, actor, false)
}

/// A merged lead that is no lead: the serde message without its position (no value of
/// the borrower's is ever echoed).
fn patched_input_error(e: serde_json::Error) -> AppError {
    let message = e.to_string();
    let message = message.split(" at line").next().unwrap_or("").to_owned();
    AppError::validation(vec![FieldError {
        field: String::new(),
        message: if message.starts_with("invalid") {
            "a field has an invalid value".into()
        } else {
            message
        },
    }])
}

/// The names of the fields a patch changed (for the audit row: names, never values).
fn changed_fields(patch: &Value, before: &Value, merged: &Value) -> Vec<String> {
    patch
        .as_object()
        .map(|o| {
            o.keys()
                .filter(|k| before.get(*k) != merged.get(*k))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The lead is visible (else 404) and the caller may act on it (else 403).
pub async fn writable_lead(
    conn: &mut sqlx::PgConnection,
    lead: Uuid,
    actor: &Actor,
) -> Result<(), AppError> {
    if !store::in_scope(conn, lead, &actor.read_scope()).await? {
        return Err(AppError::not_found());
    }
    let scope = actor.write_scope()?;
    if !store::in_scope(conn, lead, &scope).await? {
        return Err(AppError::forbidden());
    }
    Ok(())
}

/// The borrower's email address, decrypted, if the lead has one.
pub async fn email(
    conn: &mut sqlx::PgConnection,
    key: &[u8; 32],
    lead: Uuid,
) -> Result<Option<String>, AppError> {
    let Some(sealed) = store::email_enc(conn, lead).await? else {
        return Ok(None);
    };
    let plain = field::decrypt(key, at(lead, "email_enc"), &sealed)
        .map_err(|e| anyhow::anyhow!("decrypting the lead's email: {e}"))?;
    Ok(Some(String::from_utf8_lossy(&plain).into_owned()))
}

/// The owner and team of a lead within `scope`, the lead locked against deletion for the
/// rest of the caller's transaction (a loan or request being attached to it).
pub async fn owner_for_share(
    tx: &mut sqlx::PgConnection,
    lead: Uuid,
    scope: &ReadScope,
) -> Result<Option<super::LeadOwner>, AppError> {
    Ok(store::owner_for_share(tx, lead, scope).await?)
}

/// Whether the lead carries what a credit pull needs (SSN, date of birth, address); `None`
/// when there is no such lead.
pub async fn subject_complete(
    conn: &mut sqlx::PgConnection,
    lead: Uuid,
) -> Result<Option<bool>, AppError> {
    Ok(store::subject_complete(conn, lead).await?)
}

/// The lead is visible to the caller (else 404).
pub async fn visible_lead(
    conn: &mut sqlx::PgConnection,
    lead: Uuid,
    actor: &Actor,
) -> Result<(), AppError> {
    if store::in_scope(conn, lead, &actor.read_scope()).await? {
        Ok(())
    } else {
        Err(AppError::not_found())
    }
}

/// Record the borrower's SMS opt-in (who, when, how), audited; clears an earlier opt-out.
pub async fn record_sms_consent(
    state: &AppState,
    actor: &Actor,
    lead: Uuid,
    obtained_at: OffsetDateTime,
    method: crate::leads::credit::ConsentMethod,
    request_id: &str,
) -> Result<(), AppError> {
    let method = method.as_str();
    let mut tx = state.db.begin().await?;
    writable_lead(&mut tx, lead, actor).await?;
    store::set_sms_consent(&mut tx, lead, obtained_at, method, &actor.subject).await?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: lead,
            actor,
            action: "lead.sms_consent_recorded",
            entity_type: "lead",
            entity_id: lead,
            request_id: Some(request_id),
            details: json!({ "method": method }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Opt the borrower out of SMS, at once, audited.
pub async fn sms_opt_out(
    state: &AppState,
    actor: &Actor,
    lead: Uuid,
    request_id: &str,
) -> Result<(), AppError> {
    let mut tx = state.db.begin().await?;
    writable_lead(&mut tx, lead, actor).await?;
    store::set_sms_opted_out(&mut tx, lead).await?;
    audit::record(
        &mut tx,
        audit::Entry {
            chain: lead,
            actor,
            action: "lead.sms_opted_out",
            entity_type: "lead",
            entity_id: lead,
            request_id: Some(request_id),
            details: json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Whether the borrower opted out of email reminders.
pub async fn email_opted_out(conn: &mut sqlx::PgConnection, lead: Uuid) -> Result<bool, AppError> {
    Ok(store::email_opted_out(conn, lead).await?)
}

/// Opt the borrower out of email reminders (in the caller's transaction), audited
/// `lead.email_unsubscribed` with `details`.
pub async fn email_opt_out(
    tx: &mut sqlx::PgConnection,
    lead: Uuid,
    actor: &Actor,
    details: Value,
    request_id: &str,
) -> Result<(), AppError> {
    store::set_email_opted_out(&mut *tx, lead).await?;
    audit::record(
        tx,
        audit::Entry {
            chain: lead,
            actor,
            action: "lead.email_unsubscribed",
            entity_type: "lead",
            entity_id: lead,
            request_id: Some(request_id),
            details,
        },
    )
    .await?;
    Ok(())
}

/// Disposal (crate::retention): lock the leads against every other change; the ones still
/// there and not disposed.
pub async fn lock_for_disposal(
    tx: &mut sqlx::PgConnection,
    leads: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    store::lock_for_disposal(tx, leads).await
}

/// Disposal (crate::retention): blank the lead and its credit reports.
pub async fn blank_for_disposal(
    tx: &mut sqlx::PgConnection,
    leads: &[Uuid],
    at: time::OffsetDateTime,
) -> Result<(), sqlx::Error> {
    store::blank_for_disposal(tx, leads, at).await
}
