//! Field-level encryption (docs/security.md): AES-256-GCM under the borrower file's data key,
//! a random 96-bit nonce per value, and a versioned envelope
//! `0x01 | key-version (u32 BE) | nonce (12) | ciphertext | tag (16)`. The AAD names the
//! table, the column and the row id, so a ciphertext copied into another row or column
//! does not decrypt.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

const FORMAT_V1: u8 = 1;
const HEADER: usize = 1 + 4 + 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FieldError {
    #[error("the encrypted value is malformed")]
    Malformed,
    #[error("the encrypted value does not verify (wrong key, row or column)")]
    Verification,
    #[error("the encrypted value's format version is not supported")]
    UnsupportedVersion,
}

/// Where a value lives; bound into its ciphertext.
#[derive(Debug, Clone, Copy)]
pub struct Location<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub row: Uuid,
}

impl Location<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(self.table.len() + self.column.len() + 18);
        aad.extend_from_slice(self.table.as_bytes());
        aad.push(0);
        aad.extend_from_slice(self.column.as_bytes());
        aad.push(0);
        aad.extend_from_slice(self.row.as_bytes());
        aad
    }
}

/// The key version every envelope records. A borrower file's data key never changes (key
/// rotation rewraps it under the master key instead), so it is always 1; the header keeps
/// the field for a format that may one day need it.
pub const KEY_VERSION: u32 = 1;

pub fn encrypt(key: &[u8; 32], at: Location<'_>, plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(key).expect("a 32-byte key");
    let mut nonce = [0u8; 12];
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("the operating system's random generator failed");
    let aad = at.aad();
    let ciphertext = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("AES-GCM encryption of a bounded field cannot fail");
    let mut out = Vec::with_capacity(HEADER + ciphertext.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&KEY_VERSION.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

/// The key version an envelope was written with (to pick the key before decrypting).
pub fn key_version(envelope: &[u8]) -> Result<u32, FieldError> {
    if envelope.len() < HEADER + 16 {
        return Err(FieldError::Malformed);
    }
    if envelope[0] != FORMAT_V1 {
        return Err(FieldError::UnsupportedVersion);
    }
    Ok(u32::from_be_bytes([
        envelope[1],
        envelope[2],
        envelope[3],
        envelope[4],
    ]))
}

pub fn decrypt(key: &[u8; 32], at: Location<'_>, envelope: &[u8]) -> Result<Vec<u8>, FieldError> {
    key_version(envelope)?;
    let nonce: [u8; 12] = envelope[5..HEADER]
        .try_into()
        .map_err(|_| FieldError::Malformed)?;
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| FieldError::Malformed)?;
    let aad = at.aad();
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &envelope[HEADER..],
                aad: &aad,
            },
        )
        .map_err(|_| FieldError::Verification)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(row: Uuid, column: &'static str) -> Location<'static> {
        Location {
            table: "leads",
            column,
            row,
        }
    }

    #[test]
    fn round_trip_and_binding() {
        let key = [7u8; 32];
        let row = Uuid::now_v7();
        let envelope = encrypt(&key, at(row, "ssn"), b"123-45-6789");
        assert_eq!(key_version(&envelope), Ok(KEY_VERSION));
        assert_eq!(
            decrypt(&key, at(row, "ssn"), &envelope).unwrap(),
            b"123-45-6789"
        );
        // Another row, another column, another key: refused.
        assert_eq!(
            decrypt(&key, at(Uuid::now_v7(), "ssn"), &envelope),
            Err(FieldError::Verification)
        );
        assert_eq!(
            decrypt(&key, at(row, "email"), &envelope),
            Err(FieldError::Verification)
        );
        assert_eq!(
            decrypt(&[8u8; 32], at(row, "ssn"), &envelope),
            Err(FieldError::Verification)
        );
        // Tampering anywhere is detected.
        let mut flipped = envelope.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            decrypt(&key, at(row, "ssn"), &flipped),
            Err(FieldError::Verification)
        );
        assert_eq!(
            decrypt(&key, at(row, "ssn"), &envelope[..10]),
            Err(FieldError::Malformed)
        );
        // Random nonces: the same value encrypts differently each time.
        assert_ne!(envelope, encrypt(&key, at(row, "ssn"), b"123-45-6789"));
        assert!(!envelope.windows(11).any(|w| w == b"123-45-6789"));
    }
}
