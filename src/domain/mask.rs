//! What a caller who may see masked PII only (the admin role, docs/security.md) is shown in
//! place of a value: enough to recognise a record, not enough to harvest a borrower.

/// Free text (notes, reasons, comments): nothing of it.
pub const HIDDEN: &str = "***";

/// `c***@example.org`.
pub fn email(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => HIDDEN.into(),
    }
}

/// `***0187`: the last `keep` characters.
pub fn tail(value: &str, keep: usize) -> String {
    let chars: Vec<char> = value.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(keep)..].iter().collect();
    format!("{HIDDEN}{tail}")
}

/// An email address or, for anything else (a phone number), its last four characters.
pub fn address(value: &str) -> String {
    if value.contains('@') {
        email(value)
    } else {
        tail(value, 4)
    }
}

/// `***.pdf`: a document's name says what it is (`2025-W2-Jane-Doe.pdf`); its extension
/// alone does not.
pub fn filename(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((_, ext))
            if !ext.is_empty()
                && ext.len() <= 5
                && ext.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            format!("{HIDDEN}.{}", ext.to_ascii_lowercase())
        }
        _ => HIDDEN.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_only_what_identifies_a_record() {
        assert_eq!(email("casey.canary@example.org"), "c***@example.org");
        assert_eq!(email("nonsense"), "***");
        assert_eq!(tail("+12025550187", 4), "***0187");
        assert_eq!(address("+12025550187"), "***0187");
        assert_eq!(address("a@b.c"), "a***@b.c");
        assert_eq!(filename("2025 W2 Jane Doe.PDF"), "***.pdf");
        assert_eq!(filename("no-extension"), "***");
        assert_eq!(filename("weird.name with space"), "***");
    }
}
