//! The disposal ledger outside the database (`retention.ledger_path`): one JSON line per
//! disposal — the borrower file's id, when, and the rule; no PII — appended and synced to
//! disk. A restore overwrites the database's own record of disposals, so `admin restore`
//! reads this file and disposes again every file it names (docs/operations/retention.md).

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub file_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub disposed_at: OffsetDateTime,
    pub rule: String,
}

/// Append `entries` to the ledger at `path` (created with mode 0600 if missing) and sync it.
/// A crash between the database commit and this append is repaired by the next round, so
/// an entry may appear twice; readers treat the ledger as a set.
pub fn append(path: &Path, entries: &[LedgerEntry]) -> anyhow::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut lines = Vec::new();
    for entry in entries {
        serde_json::to_writer(&mut lines, entry)?;
        lines.push(b'\n');
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).read(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("opening the disposal ledger {}", path.display()))?;
    // A line torn by a crash mid-append is ended first, so it stays a broken line of its
    // own rather than swallowing this entry.
    if ends_mid_line(&mut file)? {
        lines.insert(0, b'\n');
    }
    file.write_all(&lines)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("appending to the disposal ledger {}", path.display()))
}

fn ends_mid_line(file: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if file.metadata()?.len() == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// Every entry of the ledger at `path`. A line that does not parse is an error naming its
/// number (a ledger is never edited by hand), except a line cut short by a crash
/// during an append, which is skipped.
pub fn read(path: &Path) -> anyhow::Result<Vec<LedgerEntry>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("reading the disposal ledger {}", path.display()))?;
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading the disposal ledger {}", path.display()))?;
    let mut entries = Vec::with_capacity(lines.len());
    for (n, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(entry) => entries.push(entry),
            // A crash mid-append leaves an unterminated fragment: the last line, or — once
            // the next append ended it — a line that stops short.
            Err(e) if n + 1 == lines.len() || e.is_eof() => {
                tracing::warn!(
                    line = n + 1,
                    "the disposal ledger has a line cut short by a crash"
                );
            }
            Err(e) => anyhow::bail!(
                "the disposal ledger {} has an unreadable line {}: {e}",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rule: &str) -> LedgerEntry {
        LedgerEntry {
            file_id: Uuid::now_v7(),
            disposed_at: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            rule: rule.into(),
        }
    }

    #[test]
    fn appended_entries_read_back_in_order_and_a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let (a, b) = (entry("loans_closed_days"), entry("leads_without_loan_days"));
        append(&path, std::slice::from_ref(&a)).unwrap();
        append(&path, std::slice::from_ref(&b)).unwrap();
        assert_eq!(read(&path).unwrap(), vec![a.clone(), b.clone()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the ledger is private to the service");
        }

        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"file_id\":\"0190")
            .unwrap();
        assert_eq!(read(&path).unwrap(), vec![a.clone(), b.clone()]);

        // The next append ends the torn line first and is read back whole.
        let c = entry("loans_denied_days");
        append(&path, std::slice::from_ref(&c)).unwrap();
        assert_eq!(read(&path).unwrap(), vec![a, b, c]);
    }

    #[test]
    fn a_damaged_line_in_the_middle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        append(&path, &[entry("loans_denied_days")]).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"not json\n")
            .unwrap();
        append(&path, &[entry("loans_denied_days")]).unwrap();
        let error = read(&path).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(read(&dir.path().join("missing")).is_err());
    }
}
