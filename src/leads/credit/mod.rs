//! Credit pull requests and the consent that makes them permissible (FCRA; docs/api.md
//! "Consent", "Credit pull"). Part of the lead's aggregate: a pull is of one borrower file,
//! and a lead created or updated with a consent queues its pull in the same transaction.

pub mod http;
pub mod ops;
pub mod store;
pub mod worker;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::auth::Actor;
use crate::crypto::field::Location;
use crate::domain::rfc3339;
use crate::error::FieldError;

// Where a pull is: queued, with the bureau, then completed or failed (a plain comment: the
// API shows the text, `as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum PullState {
    Queued,
    InProgress,
    Completed,
    Failed,
}

impl PullState {
    pub fn as_str(self) -> &'static str {
        match self {
            PullState::Queued => "queued",
            PullState::InProgress => "in_progress",
            PullState::Completed => "completed",
            PullState::Failed => "failed",
        }
    }

    /// Still open: the worker may still ask the bureau.
    pub fn is_open(self) -> bool {
        matches!(self, PullState::Queued | PullState::InProgress)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullType {
    Soft,
    Hard,
}

impl PullType {
    pub fn as_str(self) -> &'static str {
        match self {
            PullType::Soft => "soft",
            PullType::Hard => "hard",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentMethod {
    Written,
    Electronic,
    Verbal,
}

impl ConsentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentMethod::Written => "written",
            ConsentMethod::Electronic => "electronic",
            ConsentMethod::Verbal => "verbal",
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    /// RFC 3339; not in the future.
    pub obtained_at: String,
    pub method: ConsentMethod,
    /// The version of the disclosure text the borrower agreed to.
    pub text_version: String,
    /// The borrower's IP address; required for electronic consent.
    pub ip: Option<String>,
}

/// A lead's `credit_consent`: the pull it permits and the consent itself. A lead created
/// with one gets that pull without anyone asking (the saga's first step).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadConsentInput {
    pub pull_type: PullType,
    pub obtained_at: String,
    pub method: ConsentMethod,
    pub text_version: String,
    pub ip: Option<String>,
}

impl LeadConsentInput {
    pub fn validate(self, now: OffsetDateTime) -> Result<(PullType, Consent), Vec<FieldError>> {
        let pull_type = self.pull_type;
        ConsentInput {
            obtained_at: self.obtained_at,
            method: self.method,
            text_version: self.text_version,
            ip: self.ip,
        }
        .validate("credit_consent", now)
        .map(|c| (pull_type, c))
    }
}

#[derive(Debug, Clone)]
pub struct Consent {
    pub obtained_at: OffsetDateTime,
    pub method: ConsentMethod,
    pub text_version: String,
    pub ip: Option<std::net::IpAddr>,
}

impl ConsentInput {
    pub fn validate(self, prefix: &str, now: OffsetDateTime) -> Result<Consent, Vec<FieldError>> {
        let mut errors = Vec::new();
        let field = |f: &str| format!("{prefix}.{f}");
        let obtained_at = match OffsetDateTime::parse(&self.obtained_at, &Rfc3339) {
            Ok(t) if t <= now + time::Duration::minutes(5) => Some(t),
            Ok(_) => {
                errors.push(FieldError {
                    field: field("obtained_at"),
                    message: "must not be in the future".into(),
                });
                None
            }
            Err(_) => {
                errors.push(FieldError {
                    field: field("obtained_at"),
                    message: "must be an RFC 3339 time".into(),
                });
                None
            }
        };
        let text_version = self.text_version.trim().to_owned();
        if text_version.is_empty() || text_version.len() > 100 {
            errors.push(FieldError {
                field: field("text_version"),
                message: "is required (at most 100 characters)".into(),
            });
        }
        let ip = match self.ip.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(raw) => match raw.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    errors.push(FieldError {
                        field: field("ip"),
                        message: "must be an IP address".into(),
                    });
                    None
                }
            },
            None => None,
        };
        if self.method == ConsentMethod::Electronic
            && self.ip.as_deref().is_none_or(|s| s.trim().is_empty())
        {
            errors.push(FieldError {
                field: field("ip"),
                message: "is required for electronic consent".into(),
            });
        }
        match (errors.is_empty(), obtained_at) {
            (true, Some(obtained_at)) => Ok(Consent {
                obtained_at,
                method: self.method,
                text_version,
                ip,
            }),
            _ => Err(errors),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreditPull {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub pull_type: String,
    /// `new`, `reissue` or `upgrade`.
    pub request_kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub based_on: Option<Uuid>,
    pub status: String,
    pub score: Option<i32>,
    pub bureau: Option<String>,
    pub bureau_report_id: Option<String>,
    pub pulled_at: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: String,
}

impl CreditPull {
    /// The API shape; the score is borrower data an admin does not see (docs/security.md).
    pub fn view(r: store::PullRow, actor: &Actor) -> Self {
        let masked = actor.masks(&r.owner_subject, r.team.as_deref());
        CreditPull {
            id: r.id,
            lead_id: r.lead_id,
            pull_type: r.pull_type,
            request_kind: r.request_kind,
            based_on: r.based_on,
            status: r.status.as_str().to_owned(),
            score: if masked { None } else { r.score },
            bureau: r.bureau,
            bureau_report_id: r.bureau_report_id,
            pulled_at: r.pulled_at.map(rfc3339),
            failure_reason: r.failure_reason,
            created_at: rfc3339(r.created_at),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreditPullList {
    pub items: Vec<CreditPull>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowUp {
    /// Required for an upgrade: a hard-pull consent.
    pub consent: Option<ConsentInput>,
}

/// Where a pull's encrypted report is (its field-encryption context).
pub fn report_at(id: Uuid) -> Location<'static> {
    Location {
        table: "credit_reports",
        column: "report_enc",
        row: id,
    }
}

pub fn ip_at(id: Uuid) -> Location<'static> {
    Location {
        table: "credit_reports",
        column: "consent_ip_enc",
        row: id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(method: ConsentMethod, ip: Option<&str>, at: &str) -> ConsentInput {
        ConsentInput {
            obtained_at: at.into(),
            method,
            text_version: "fcra-2026-01".into(),
            ip: ip.map(Into::into),
        }
    }

    #[test]
    fn consent_rules() {
        let now = OffsetDateTime::now_utc();
        let past = "2026-01-02T03:04:05Z";
        assert!(
            input(ConsentMethod::Written, None, past)
                .validate("consent", now)
                .is_ok()
        );
        let e = input(ConsentMethod::Electronic, None, past)
            .validate("consent", now)
            .unwrap_err();
        assert_eq!(e[0].field, "consent.ip");
        assert!(
            input(ConsentMethod::Electronic, Some("203.0.113.7"), past)
                .validate("consent", now)
                .is_ok()
        );
        assert!(
            input(ConsentMethod::Verbal, Some("not an ip"), past)
                .validate("consent", now)
                .is_err()
        );
        assert!(
            input(ConsentMethod::Verbal, None, "2999-01-01T00:00:00Z")
                .validate("consent", now)
                .is_err()
        );
        assert!(
            input(ConsentMethod::Verbal, None, "yesterday")
                .validate("consent", now)
                .is_err()
        );
    }
}
