//! A lead's fields at rest and on the way out: each borrower field sealed under the lead's
//! data key (and the SSN's blind index), and the API shape with masking for the caller.

use serde_json::Value;
use uuid::Uuid;

use super::store::{LeadRow, SealedLead};
use super::{Address, Lead, Owner, ValidLead};
use crate::auth::Actor;
use crate::crypto::field::{self, Location};
use crate::crypto::{DataKey, blind_index};
use crate::domain::mask;
use crate::domain::rfc3339;
use crate::domain::ssn::Ssn;
use crate::error::AppError;

const TABLE: &str = "leads";

pub fn at(row: Uuid, column: &'static str) -> Location<'static> {
    Location {
        table: TABLE,
        column,
        row,
    }
}

pub fn seal(
    key: &DataKey,
    row: Uuid,
    column: &'static str,
    value: Option<String>,
) -> Option<Vec<u8>> {
    value.map(|v| field::encrypt(key, at(row, column), v.as_bytes()))
}

pub fn unseal(
    key: &DataKey,
    row: Uuid,
    column: &'static str,
    value: &Option<Vec<u8>>,
) -> Result<Option<String>, AppError> {
    match value {
        None => Ok(None),
        Some(envelope) => {
            let plain = field::decrypt(key, at(row, column), envelope)
                .map_err(|e| anyhow::anyhow!("decrypting {TABLE}.{column}: {e}"))?;
            Ok(Some(String::from_utf8(plain).map_err(|_| {
                anyhow::anyhow!("{TABLE}.{column} is not UTF-8")
            })?))
        }
    }
}

/// Decrypt a row into the API shape. `reveal_ssn` shows the full SSN (audited by the caller).
pub fn render(
    row: &LeadRow,
    key: &DataKey,
    actor: &Actor,
    reveal_ssn: bool,
) -> Result<Lead, AppError> {
    let id = row.id;
    let masked = actor.masks(&row.owner_subject, row.team.as_deref());
    let ssn = unseal(key, id, "ssn_enc", &row.ssn_enc)?
        .and_then(|s| Ssn::parse(&s).ok())
        .map(|s| {
            if reveal_ssn {
                s.formatted()
            } else {
                s.masked()
            }
        });
    let email = unseal(key, id, "email_enc", &row.email_enc)?;
    let phone = unseal(key, id, "phone_enc", &row.phone_enc)?;
    let dob = unseal(key, id, "date_of_birth_enc", &row.date_of_birth_enc)?;
    let income = unseal(key, id, "annual_income_enc", &row.annual_income_enc)?;
    let address: Option<Address> = unseal(key, id, "address_enc", &row.address_enc)?
        .and_then(|a| serde_json::from_str(&a).ok());
    let notes = unseal(key, id, "notes_enc", &row.notes_enc)?;
    let loan_purpose = row
        .loan_purpose
        .as_deref()
        .and_then(|p| serde_json::from_value(Value::String(p.to_owned())).ok());
    Ok(Lead {
        id,
        first_name: row.first_name.clone(),
        last_name: row.last_name.clone(),
        email: if masked {
            email.as_deref().map(mask::email)
        } else {
            email
        },
        phone: if masked {
            phone.as_deref().map(|p| mask::tail(p, 4))
        } else {
            phone
        },
        ssn,
        date_of_birth: if masked {
            dob.map(|_| "****-**-**".into())
        } else {
            dob
        },
        address: if masked {
            address.map(|a| Address {
                line1: "***".into(),
                line2: None,
                ..a
            })
        } else {
            address
        },
        annual_income: if masked {
            income.map(|_| "***".into())
        } else {
            income
        },
        loan_purpose,
        source: row.source.clone(),
        notes: if masked {
            notes.map(|_| "***".into())
        } else {
            notes
        },
        status: row.status,
        owner: Owner {
            subject: row.owner_subject.clone(),
            display_name: row
                .owner_name
                .clone()
                .unwrap_or_else(|| row.owner_subject.clone()),
        },
        team: row.team.clone(),
        version: row.version,
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
        possible_duplicates: None,
    })
}

pub fn seal_lead(lead: &ValidLead, id: Uuid, key: &DataKey, index_key: &DataKey) -> SealedLead {
    SealedLead {
        email: seal(key, id, "email_enc", lead.email.clone()),
        phone: seal(key, id, "phone_enc", lead.phone.clone()),
        ssn: seal(
            key,
            id,
            "ssn_enc",
            lead.ssn.as_ref().map(|s| s.digits().to_owned()),
        ),
        ssn_index: lead
            .ssn
            .as_ref()
            .map(|s| blind_index::ssn_index(index_key, s.digits())),
        dob: seal(
            key,
            id,
            "date_of_birth_enc",
            lead.date_of_birth.map(|d| d.to_string()),
        ),
        income: seal(
            key,
            id,
            "annual_income_enc",
            lead.annual_income.map(|m| m.to_string()),
        ),
        address: seal(
            key,
            id,
            "address_enc",
            lead.address
                .as_ref()
                .map(|a| serde_json::to_string(a).unwrap_or_default()),
        ),
        notes: seal(key, id, "notes_enc", lead.notes.clone()),
    }
}

/// Which fields a lead carries (audit details: names, never values).
pub fn present_fields(lead: &ValidLead) -> Vec<&'static str> {
    let mut fields = vec!["first_name", "last_name"];
    for (name, present) in [
        ("email", lead.email.is_some()),
        ("phone", lead.phone.is_some()),
        ("ssn", lead.ssn.is_some()),
        ("date_of_birth", lead.date_of_birth.is_some()),
        ("address", lead.address.is_some()),
        ("annual_income", lead.annual_income.is_some()),
        ("loan_purpose", lead.loan_purpose.is_some()),
        ("source", lead.source.is_some()),
        ("notes", lead.notes.is_some()),
    ] {
        if present {
            fields.push(name);
        }
    }
    fields
}
