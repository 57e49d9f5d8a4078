//! `[retention]`: how long each category of borrower record is kept, and the legal floor
//! the code knows for each (docs/operations/retention.md).

use serde::Deserialize;

/// Records lifecycle (docs/operations/retention.md): how long each category of borrower
/// record is kept, in days after its start event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    pub enabled: bool,
    pub leads_without_loan_days: u32,
    pub loans_denied_days: u32,
    pub loans_withdrawn_days: u32,
    pub loans_closed_days: u32,
    pub documents_rejected_days: u32,
    pub credit_reports_days: u32,
    pub notifications_days: u32,
    /// Seconds between disposal rounds (the workers' `retention` runner).
    pub interval_secs: u64,
    /// The share of its time a disposal round may work (0 < x ≤ 1): after each step it
    /// waits so that the steps take at most this share, leaving the rest to the agents.
    pub work_share: f64,
    /// How often a key epoch (rotate, rewrap, `admin keys retire`) ends: the longest a
    /// disposed file stays recoverable from backups, and so the longest a backup is kept.
    pub key_epoch_days: u32,
    #[serde(default)]
    pub ledger_path: Option<std::path::PathBuf>,
}

/// One retention rule: its configuration key, the category, the legal floor the code
/// knows (days) and its basis.
#[derive(Debug, Clone, Copy)]
pub struct RetentionRule {
    pub rule: &'static str,
    pub category: &'static str,
    pub floor_days: u32,
    pub basis: &'static str,
}

/// The longest period accepted: longer ones cannot be dated.
pub const MAX_DAYS: u32 = 36_500;

/// Every rule with its floor: 25 months (Regulation B) is 763 days, 5 years 1827.
pub const RETENTION_RULES: [RetentionRule; 7] = [
    RetentionRule {
        rule: "leads_without_loan_days",
        category: "lead",
        floor_days: 763,
        basis: "Regulation B, 12 CFR 1002.12(b)(1): 25 months after notice of action",
    },
    RetentionRule {
        rule: "loans_denied_days",
        category: "loan",
        floor_days: 763,
        basis: "Regulation B, 12 CFR 1002.12(b)(1): 25 months after notice of action",
    },
    RetentionRule {
        rule: "loans_withdrawn_days",
        category: "loan",
        floor_days: 763,
        basis: "Regulation B, 12 CFR 1002.12(b)(1), (b)(3): 25 months",
    },
    RetentionRule {
        rule: "loans_closed_days",
        category: "loan",
        floor_days: 1827,
        basis: "Regulation Z, 12 CFR 1026.25(c)(1)(ii)(A): closing disclosure 5 years; 1026.25(c)(3): ability to repay 3 years",
    },
    RetentionRule {
        rule: "documents_rejected_days",
        category: "document",
        floor_days: 0,
        basis: "rejected by the agent, so not used to evaluate the application: no legal floor",
    },
    RetentionRule {
        rule: "credit_reports_days",
        category: "credit_report",
        floor_days: 763,
        basis: "Regulation B, 12 CFR 1002.12(b)(1), from the application's final action; 3 years after a closing, 12 CFR 1026.25(c)(3); disposal per 16 CFR 682.3",
    },
    RetentionRule {
        rule: "notifications_days",
        category: "notification",
        floor_days: 0,
        basis: "operational record: no legal floor",
    },
];

impl RetentionSettings {
    /// The configured days of `rule` (one of [`RETENTION_RULES`]).
    pub fn days(&self, rule: &str) -> u32 {
        match rule {
            "leads_without_loan_days" => self.leads_without_loan_days,
            "loans_denied_days" => self.loans_denied_days,
            "loans_withdrawn_days" => self.loans_withdrawn_days,
            "loans_closed_days" => self.loans_closed_days,
            "documents_rejected_days" => self.documents_rejected_days,
            "credit_reports_days" => self.credit_reports_days,
            "notifications_days" => self.notifications_days,
            _ => u32::MAX,
        }
    }

    /// Disposal needs its ledger outside the database, and a key epoch a sane length:
    /// `(key, message)` when not.
    pub fn missing_ledger(&self) -> Option<(String, String)> {
        if !(self.work_share > 0.0 && self.work_share <= 1.0) {
            return Some((
                "retention.work_share".to_owned(),
                format!("{} is not in (0, 1]", self.work_share),
            ));
        }
        if !(1..=3650).contains(&self.key_epoch_days) {
            return Some((
                "retention.key_epoch_days".to_owned(),
                format!("{} is not between 1 and 3650 days", self.key_epoch_days),
            ));
        }
        (self.enabled && self.ledger_path.is_none()).then(|| {
            (
                "retention.ledger_path".to_owned(),
                "is required when retention.enabled = true: every disposal is recorded outside the database, so a restore cannot bring a disposed file back".to_owned(),
            )
        })
    }

    /// The first rule configured below its legal floor (or above a hundred years), as
    /// `(key, message)`.
    pub fn below_floor(&self) -> Option<(String, String)> {
        RETENTION_RULES.iter().find_map(|r| {
            let days = self.days(r.rule);
            if days > MAX_DAYS {
                return Some((
                    format!("retention.{}", r.rule),
                    format!("{days} days is more than {MAX_DAYS} (a hundred years)"),
                ));
            }
            (days < r.floor_days).then(|| {
                (
                    format!("retention.{}", r.rule),
                    format!(
                        "{days} days is shorter than the legal minimum of {} days ({}); an installation may lengthen a period, never shorten it",
                        r.floor_days, r.basis
                    ),
                )
            })
        })
    }
}
