//! Records lifecycle (docs/operations/retention.md): legal holds on borrower files, the
//! retention report — what each rule of `[retention]` would dispose of and when, and what
//! holds protect —, disposal by crypto-shredding with its ledger, and the borrower-file
//! export.

pub mod disposal;
pub mod export;
pub mod http;
pub mod ledger;
pub mod ops;
pub mod store;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto::field::Location;

/// What a hold is placed on: a lead or a loan; either way it protects the whole borrower
/// file (the lead and all its loans).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HeldEntity {
    Lead,
    Loan,
}

impl HeldEntity {
    pub fn as_str(self) -> &'static str {
        match self {
            HeldEntity::Lead => "lead",
            HeldEntity::Loan => "loan",
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLegalHold {
    pub entity_type: HeldEntity,
    pub entity_id: Uuid,
    /// Why the file must be kept (at most 1000 characters).
    pub reason: String,
    /// The matter's reference (docket, subpoena, ticket; at most 200 characters).
    #[serde(default)]
    pub reference: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LegalHold {
    pub id: Uuid,
    pub entity_type: HeldEntity,
    pub entity_id: Uuid,
    /// `***` for a caller who sees masked PII only.
    pub reason: String,
    pub reference: Option<String>,
    pub placed_by: String,
    pub placed_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LegalHoldList {
    pub items: Vec<LegalHold>,
    pub next_cursor: Option<String>,
}

/// One rule of the report: how many records are due for disposal now and within 30 days,
/// and how many of those a legal hold keeps.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuleReport {
    pub rule: String,
    pub category: String,
    pub retain_days: u32,
    pub basis: String,
    pub due_now: i64,
    pub due_next_30_days: i64,
    pub held: i64,
}

/// What backups may still hold of disposed files: a disposal reaches backups at the next key
/// epoch (docs/operations/retention.md, "Key epochs").
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackupReport {
    /// Disposed files whose destroyed data key a backup may still hold, wrapped under a
    /// master key version no key epoch has retired yet.
    pub disposed_still_in_backups: i64,
    pub key_epoch_days: u32,
    /// When the last `admin keys retire` ran; null before the first.
    pub last_key_epoch_at: Option<String>,
    /// When the next key epoch is due: from then on no backup that still opens holds those
    /// files' data keys (null when none waits, and always with the `local` key provider,
    /// whose backups carry the master key; a date in the past is overdue). Clear-text
    /// names stay in database backups until those backups are deleted.
    pub gone_from_backups_by: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RetentionReport {
    pub rules: Vec<RuleReport>,
    pub backups: BackupReport,
    /// Whether disposal runs (`retention.enabled`); the report is a dry run either way.
    pub disposal_enabled: bool,
    pub generated_at: String,
}

pub fn reason_at(hold: Uuid) -> Location<'static> {
    Location {
        table: "legal_holds",
        column: "reason_enc",
        row: hold,
    }
}

pub fn reference_at(hold: Uuid) -> Location<'static> {
    Location {
        table: "legal_holds",
        column: "reference_enc",
        row: hold,
    }
}
