//! The real file type by magic bytes: the declared Content-Type and the extension are never
//! trusted (DESIGN.md §2).

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

#[cfg(test)]
mod tests {
    use super::*;

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
