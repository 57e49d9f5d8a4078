//! The real file type by magic bytes: the declared Content-Type and the extension are never
//! trusted (docs/security.md).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Pdf,
    Jpeg,
    Png,
    Tiff,
    Heic,
}

impl Detected {
    pub fn as_str(self) -> &'static str {
        match self {
            Detected::Pdf => "application/pdf",
            Detected::Jpeg => "image/jpeg",
            Detected::Png => "image/png",
            Detected::Tiff => "image/tiff",
            Detected::Heic => "image/heic",
        }
    }

    /// Whether a declared Content-Type names this type.
    pub fn matches_declared(self, declared: &str) -> bool {
        match self {
            Detected::Heic => matches!(declared, "image/heic" | "image/heif"),
            other => other.as_str() == declared,
        }
    }
}

/// The type of a file from its first bytes (16 are enough), if it is one we accept.
pub fn sniff(head: &[u8]) -> Option<Detected> {
    if head.starts_with(b"%PDF-") {
        Some(Detected::Pdf)
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Detected::Jpeg)
    } else if head.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
        Some(Detected::Png)
    } else if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
        Some(Detected::Tiff)
    } else if head.len() >= 12
        && &head[4..8] == b"ftyp"
        && matches!(
            &head[8..12],
            b"heic" | b"heix" | b"hevc" | b"heim" | b"heis" | b"mif1" | b"msf1"
        )
    {
        Some(Detected::Heic)
    } else {
        None
    }
}

/// Finds the `/Encrypt` entry of a PDF's trailer (or cross-reference stream dictionary),
/// which marks a password-protected file nobody at the lender could read. Fed chunk by chunk
/// during the one streaming pass; a name split across two chunks is still found.
#[derive(Debug, Default)]
pub struct PdfEncryption {
    carry: Vec<u8>,
    found: bool,
}

const ENCRYPT: &[u8] = b"/Encrypt";

impl PdfEncryption {
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.found {
            return;
        }
        // The carry holds the previous chunk's tail: enough for the name and the byte after it.
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(chunk);
        let mut at = 0;
        while let Some(pos) = find(&window[at..], ENCRYPT) {
            let end = at + pos + ENCRYPT.len();
            match window.get(end) {
                // `/EncryptMetadata` and the like are other names, not the entry.
                Some(next) if next.is_ascii_alphanumeric() => at = end,
                Some(_) => {
                    self.found = true;
                    return;
                }
                // The name ends the window: decide with the next chunk.
                None => break,
            }
        }
        let keep = window.len().min(ENCRYPT.len());
        self.carry = window[window.len() - keep..].to_vec();
    }

    pub fn found(&self) -> bool {
        self.found
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encrypted(chunks: &[&[u8]]) -> bool {
        let mut scanner = PdfEncryption::default();
        for chunk in chunks {
            scanner.feed(chunk);
        }
        scanner.found()
    }

    #[test]
    fn encrypted_pdfs_are_recognised_across_chunk_boundaries() {
        let trailer: &[u8] = b"trailer\n<< /Size 9 /Root 1 0 R /Encrypt 7 0 R >>\n%%EOF";
        assert!(encrypted(&[b"%PDF-1.7\n", trailer]));
        for split in 1..trailer.len() {
            let (a, b) = trailer.split_at(split);
            assert!(encrypted(&[b"%PDF-1.4 ", a, b]), "split at {split}");
        }
        assert!(encrypted(&[b"<</Type/XRef/Encrypt<</Filter/Standard>>"]));
        assert!(!encrypted(&[b"%PDF-1.7\n<< /Size 9 /Root 1 0 R >>\n%%EOF"]));
        assert!(!encrypted(&[b"<< /EncryptMetadata false >>"]));
        assert!(!encrypted(&[b"<< /Encry", b"ptMetadata false >>"]));
    }

    #[test]
    fn magic_bytes() {
        assert_eq!(sniff(b"%PDF-1.7\n"), Some(Detected::Pdf));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Detected::Jpeg));
        assert_eq!(
            sniff(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]),
            Some(Detected::Png)
        );
        assert_eq!(sniff(b"II*\0...."), Some(Detected::Tiff));
        assert_eq!(sniff(b"\0\0\0\x18ftypheic\0\0"), Some(Detected::Heic));
        assert_eq!(sniff(b"MZ\x90\0"), None, "a Windows executable");
        assert_eq!(sniff(b""), None);
        assert!(Detected::Heic.matches_declared("image/heif"));
        assert!(!Detected::Pdf.matches_declared("image/png"));
    }
}
