//! Leads: the request shape, validation into a `ValidLead`, and JSON merge patch (RFC 7396).

pub mod credit;
pub mod fields;
pub mod http;
pub mod ops;
pub mod store;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::Date;
use uuid::Uuid;

use crate::domain::money::{Money, MoneyInput};
use crate::domain::ssn::Ssn;
use crate::error::FieldError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoanPurpose {
    Purchase,
    Refinance,
    CashOutRefinance,
    HomeEquity,
}

impl LoanPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            LoanPurpose::Purchase => "purchase",
            LoanPurpose::Refinance => "refinance",
            LoanPurpose::CashOutRefinance => "cash_out_refinance",
            LoanPurpose::HomeEquity => "home_equity",
        }
    }
}

/// Who owns a lead: its owner's subject and team (a loan or request attached to the lead
/// takes them).
pub struct LeadOwner {
    pub owner_subject: String,
    pub team: Option<String>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum LeadStatus {
    New,
    Contacted,
    Qualified,
    Converted,
    Lost,
}

impl LeadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LeadStatus::New => "new",
            LeadStatus::Contacted => "contacted",
            LeadStatus::Qualified => "qualified",
            LeadStatus::Converted => "converted",
            LeadStatus::Lost => "lost",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    /// Two-letter USPS code.
    pub state: String,
    /// `12345` or `12345-6789`.
    pub postal_code: String,
}

/// What a client may send (create) or what a merge patch produces (update).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadInput {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    /// E.164, e.g. `+14155550123`.
    pub phone: Option<String>,
    /// `123-45-6789` or `123456789`.
    pub ssn: Option<String>,
    /// `YYYY-MM-DD`; the borrower must be 18 or older.
    pub date_of_birth: Option<String>,
    pub address: Option<Address>,
    /// Decimal string (or number) with at most two places.
    #[schema(value_type = Option<String>)]
    pub annual_income: Option<MoneyInput>,
    pub loan_purpose: Option<LoanPurpose>,
    pub source: Option<String>,
    pub notes: Option<String>,
    pub status: Option<LeadStatus>,
    /// Starts a credit pull of this type with this consent once the lead exists.
    #[serde(default)]
    pub credit_consent: Option<crate::leads::credit::LeadConsentInput>,
}

#[derive(Debug, Clone)]
pub struct ValidLead {
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub ssn: Option<Ssn>,
    pub date_of_birth: Option<Date>,
    pub address: Option<Address>,
    pub annual_income: Option<Money>,
    pub loan_purpose: Option<LoanPurpose>,
    pub source: Option<String>,
    pub notes: Option<String>,
    pub status: LeadStatus,
}

fn field_error(errors: &mut Vec<FieldError>, field: &str, message: &str) {
    errors.push(FieldError {
        field: field.to_owned(),
        message: message.to_owned(),
    });
}

fn text(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Option<String>,
    max: usize,
    required: bool,
) -> Option<String> {
    let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    match &value {
        None if required => field_error(errors, field, "is required"),
        Some(v) if v.chars().count() > max => {
            field_error(errors, field, &format!("must be at most {max} characters"))
        }
        Some(v) if v.chars().any(|c| c.is_control() && c != '\n') => {
            field_error(errors, field, "must not contain control characters")
        }
        _ => {}
    }
    value
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && email.len() <= 254
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

fn valid_e164(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

const US_STATES: [&str; 56] = [
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS",
    "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY",
    "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV",
    "WI", "WY", "DC", "PR", "GU", "VI", "AS", "MP",
];

pub fn validate_address(errors: &mut Vec<FieldError>, prefix: &str, address: Address) -> Address {
    let at = |f: &str| format!("{prefix}.{f}");
    let line1 = text(errors, &at("line1"), Some(address.line1), 200, true).unwrap_or_default();
    let line2 = text(errors, &at("line2"), address.line2, 200, false);
    let city = text(errors, &at("city"), Some(address.city), 100, true).unwrap_or_default();
    let state = address.state.trim().to_ascii_uppercase();
    if !US_STATES.contains(&state.as_str()) {
        field_error(errors, &at("state"), "must be a two-letter US state code");
    }
    let postal_code = address.postal_code.trim().to_owned();
    let zip_ok = match postal_code.len() {
        5 => postal_code.bytes().all(|b| b.is_ascii_digit()),
        // Bytes, not string slices (a multi-byte character at byte 5 would panic).
        10 => postal_code.bytes().enumerate().all(|(i, b)| {
            if i == 5 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        }),
        _ => false,
    };
    if !zip_ok {
        field_error(
            errors,
            &at("postal_code"),
            "must be a ZIP code (12345 or 12345-6789)",
        );
    }
    Address {
        line1,
        line2,
        city,
        state,
        postal_code,
    }
}

impl LeadInput {
    /// Validate everything at once, so the client sees every problem in one answer. Error
    /// messages name fields and rules, never the values.
    pub fn validate(self, today: Date) -> Result<ValidLead, Vec<FieldError>> {
        let mut errors = Vec::new();
        let first_name = text(&mut errors, "first_name", self.first_name, 100, true);
        let last_name = text(&mut errors, "last_name", self.last_name, 100, true);
        let email = text(&mut errors, "email", self.email, 254, false).map(|e| e.to_lowercase());
        if let Some(e) = &email
            && !valid_email(e)
        {
            field_error(&mut errors, "email", "must be an email address");
        }
        let phone = text(&mut errors, "phone", self.phone, 16, false);
        if let Some(p) = &phone
            && !valid_e164(p)
        {
            field_error(
                &mut errors,
                "phone",
                "must be in E.164 form, e.g. +14155550123",
            );
        }
        let ssn = match self.ssn.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(raw) => match Ssn::parse(raw) {
                Ok(ssn) => Some(ssn),
                Err(message) => {
                    field_error(&mut errors, "ssn", message);
                    None
                }
            },
            None => None,
        };
        let date_of_birth = date_of_birth(&mut errors, self.date_of_birth.as_deref(), today);
        let address = self
            .address
            .map(|a| validate_address(&mut errors, "address", a));
        let annual_income = match self.annual_income {
            Some(MoneyInput(raw)) => match Money::parse(&raw) {
                Ok(m) => Some(m),
                Err(message) => {
                    field_error(&mut errors, "annual_income", message);
                    None
                }
            },
            None => None,
        };
        let source = text(&mut errors, "source", self.source, 100, false);
        let notes = text(&mut errors, "notes", self.notes, 4000, false);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ValidLead {
            first_name: first_name.unwrap_or_default(),
            last_name: last_name.unwrap_or_default(),
            email,
            phone,
            ssn,
            date_of_birth,
            address,
            annual_income,
            loan_purpose: self.loan_purpose,
            source,
            notes,
            status: self.status.unwrap_or(LeadStatus::New),
        })
    }
}

/// A borrower's date of birth: a past date as YYYY-MM-DD, after 1900, 18 or more years
/// before `today`.
fn date_of_birth(errors: &mut Vec<FieldError>, raw: Option<&str>, today: Date) -> Option<Date> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        Some(raw) => {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            match Date::parse(raw, &format) {
                Ok(dob) if dob >= today => {
                    field_error(errors, "date_of_birth", "must be in the past");
                    None
                }
                Ok(dob) if dob.year() < 1900 => {
                    field_error(errors, "date_of_birth", "must be after 1900");
                    None
                }
                Ok(dob) => {
                    // 29 February has no counterpart 18 years back: use the 28th.
                    let eighteen = today.replace_year(today.year() - 18).unwrap_or_else(|_| {
                        today
                            .replace_day(28)
                            .and_then(|d| d.replace_year(today.year() - 18))
                            .unwrap_or(today)
                    });
                    if dob > eighteen {
                        field_error(errors, "date_of_birth", "the borrower must be 18 or older");
                        None
                    } else {
                        Some(dob)
                    }
                }
                Err(_) => {
                    field_error(errors, "date_of_birth", "must be a date as YYYY-MM-DD");
                    None
                }
            }
        }
        None => None,
    }
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(changes) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let Value::Object(fields) = target else {
                return;
            };
            for (key, value) in changes {
                if value.is_null() {
                    fields.remove(key);
                } else {
                    merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Owner {
    pub subject: String,
    pub display_name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Lead {
    pub id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// `***-**-1234` unless revealed.
    pub ssn: Option<String>,
    pub date_of_birth: Option<String>,
    pub address: Option<Address>,
    pub annual_income: Option<String>,
    pub loan_purpose: Option<LoanPurpose>,
    pub source: Option<String>,
    pub notes: Option<String>,
    pub status: LeadStatus,
    pub owner: Owner,
    pub team: Option<String>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub possible_duplicates: Option<Vec<Uuid>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeadList {
    pub items: Vec<Lead>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reveal {
    Ssn,
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::date;

    use super::*;

    fn input(value: Value) -> LeadInput {
        serde_json::from_value(value).unwrap()
    }

    const TODAY: Date = date!(2026 - 11 - 26);

    #[test]
    fn a_full_lead_validates() {
        let lead = input(json!({
            "first_name": " Jo ", "last_name": "Doe", "email": "Jo.Doe@Example.com",
            "phone": "+14155550123", "ssn": "123-45-6789", "date_of_birth": "1980-02-29",
            "address": {"line1": "1 Main St", "city": "Springfield", "state": "il", "postal_code": "62701"},
            "annual_income": 85000, "loan_purpose": "purchase"
        }))
        .validate(TODAY)
        .unwrap();
        assert_eq!(lead.first_name, "Jo");
        assert_eq!(lead.email.as_deref(), Some("jo.doe@example.com"));
        assert_eq!(lead.annual_income.unwrap().to_string(), "85000.00");
        assert_eq!(lead.address.unwrap().state, "IL");
        assert_eq!(lead.status, LeadStatus::New);
    }

    #[test]
    fn every_problem_is_reported_by_field_without_values() {
        let errors = input(json!({
            "first_name": "", "email": "not-an-email", "phone": "2025550199",
            "ssn": "666-12-3456", "date_of_birth": "2015-01-01", "annual_income": "-5",
            "address": {"line1": "x", "city": "y", "state": "ZZ", "postal_code": "1234"}
        }))
        .validate(TODAY)
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "first_name",
            "last_name",
            "email",
            "phone",
            "ssn",
            "date_of_birth",
            "annual_income",
            "address.state",
            "address.postal_code",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        let text = format!("{errors:?}");
        for value in ["not-an-email", "2025550199", "666-12-3456", "2015-01-01"] {
            assert!(!text.contains(value), "{value} echoed");
        }
    }

    #[test]
    fn eighteen_exactly_is_allowed() {
        let ok = input(json!({"first_name": "a", "last_name": "b", "date_of_birth": "2008-11-26"}));
        assert!(ok.validate(TODAY).is_ok());
        let young =
            input(json!({"first_name": "a", "last_name": "b", "date_of_birth": "2008-11-27"}));
        assert!(young.validate(TODAY).is_err());
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(
            serde_json::from_value::<LeadInput>(json!({"first_name": "a", "nope": 1})).is_err()
        );
    }
}
