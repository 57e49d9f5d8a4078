//! Where a document is in its life: announced, uploaded, being scanned, then decided
//! (`available`, `rejected`, `failed`) or ended (`expired`, `deleted`). The documents
//! aggregate moves it; the events about a document carry it.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum DocumentState {
    /// Announced: its pre-signed PUT is out, no file yet.
    AwaitingUpload,
    /// The file is in quarantine, waiting for the pipeline.
    Uploaded,
    Scanning,
    /// Scanned, checked and stored encrypted: readable.
    Available,
    /// Refused by the pipeline (malware, type, size, duplicate) or cut off with its link.
    Rejected,
    /// Processing ran out of retries (a DLQ replay processes it again).
    Failed,
    /// Its upload window closed without a file.
    Expired,
    Deleted,
}

impl DocumentState {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentState::AwaitingUpload => "awaiting_upload",
            DocumentState::Uploaded => "uploaded",
            DocumentState::Scanning => "scanning",
            DocumentState::Available => "available",
            DocumentState::Rejected => "rejected",
            DocumentState::Failed => "failed",
            DocumentState::Expired => "expired",
            DocumentState::Deleted => "deleted",
        }
    }
}

impl fmt::Display for DocumentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::DocumentState;

    #[test]
    fn the_text_is_what_the_database_check_constraint_and_the_api_use() {
        for (state, text) in [
            (DocumentState::AwaitingUpload, "awaiting_upload"),
            (DocumentState::Available, "available"),
            (DocumentState::Deleted, "deleted"),
        ] {
            assert_eq!(state.as_str(), text);
            assert_eq!(serde_json::to_value(state).unwrap(), text);
        }
    }
}
