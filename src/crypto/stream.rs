//! Chunked streaming AEAD for documents (docs/security.md), in the style of age / Tink
//! AES-GCM-HKDF streaming.
//!
//! ```text
//! header  = magic "LFDS" | version 1 | algorithm 1 | key version (u32 BE) | salt (32)
//!           | nonce prefix (7) | chunk size (u32 BE) | commitment (32)
//! chunk i = AES-256-GCM(k, nonce = prefix | i (u32 BE) | last (u8), aad = header) → ct | tag
//! (k, c)  = HKDF-SHA256(ikm = file key, salt, info = "loanfolio-document-v1" | document id)
//! commitment = HMAC-SHA256(c, header without the commitment)
//! ```
//!
//! The commitment is checked before anything is decrypted, so a wrong key or a header moved
//! to another document fails at once; every chunk's tag covers its index, the last-chunk
//! flag and the header, so truncation at a chunk boundary, reordering, appending after the
//! last chunk and swapping chunks between documents all fail. No plaintext of a chunk is
//! released before its tag verifies. Both sides work incrementally (`push` / `finish`) so a
//! pipeline never holds more than about one chunk.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};
use uuid::Uuid;
use zeroize::Zeroizing;

pub const MAGIC: &[u8; 4] = b"LFDS";
pub const VERSION: u8 = 1;
pub const ALGORITHM_AES256_GCM_HKDF_SHA256: u8 = 1;
pub const CHUNK_SIZE: usize = 64 * 1024;
const TAG: usize = 16;
const PREFIX: usize = 7;
const SALT: usize = 32;
pub const HEADER_LEN: usize = 4 + 1 + 1 + 4 + SALT + PREFIX + 4 + 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("not a Loanfolio encrypted document")]
    BadMagic,
    #[error("unsupported format version or algorithm")]
    Unsupported,
    #[error("the key commitment does not match: wrong key or another document's header")]
    WrongKey,
    #[error("a chunk does not verify (tampered, reordered or swapped)")]
    ChunkVerification,
    #[error("the stream ends before its last chunk (truncated)")]
    Truncated,
    #[error("data follows the last chunk")]
    TrailingData,
    #[error("the header is malformed")]
    MalformedHeader,
}

struct Keys {
    aead: Aes256Gcm,
    commitment: Zeroizing<[u8; 32]>,
}

struct Len64;

impl hkdf::KeyType for Len64 {
    fn len(&self) -> usize {
        64
    }
}

fn derive(file_key: &[u8; 32], salt: &[u8], document: Uuid) -> Keys {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(file_key);
    let info_parts = [
        b"loanfolio-document-v1".as_slice(),
        document.as_bytes().as_slice(),
    ];
    let okm = prk
        .expand(&info_parts, Len64)
        .expect("64 bytes is a valid HKDF length");
    let mut out = Zeroizing::new([0u8; 64]);
    okm.fill(out.as_mut())
        .expect("64 bytes is a valid HKDF length");
    let mut commitment = Zeroizing::new([0u8; 32]);
    commitment.copy_from_slice(&out[32..]);
    Keys {
        aead: Aes256Gcm::new_from_slice(&out[..32]).expect("32-byte key"),
        commitment,
    }
}

fn commit(key: &[u8; 32], header_without_commitment: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, key),
        header_without_commitment,
    );
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn nonce(prefix: &[u8; PREFIX], index: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..PREFIX].copy_from_slice(prefix);
    n[PREFIX..PREFIX + 4].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// The encrypted size of a document of `plain` bytes: known before encrypting, so the
/// ciphertext can be streamed in a single PUT with its Content-Length.
pub fn sealed_len(plain: u64) -> u64 {
    let chunk = CHUNK_SIZE as u64;
    let chunks = plain.div_ceil(chunk).max(1);
    HEADER_LEN as u64 + plain + chunks * TAG as u64
}

pub struct Encryptor {
    keys: Keys,
    header: Vec<u8>,
    prefix: [u8; PREFIX],
    index: u32,
    pending: Vec<u8>,
    header_sent: bool,
}

impl Encryptor {
    pub fn new(file_key: &[u8; 32], key_version: u32, document: Uuid) -> Self {
        let rng = SystemRandom::new();
        let mut salt = [0u8; SALT];
        let mut prefix = [0u8; PREFIX];
        rng.fill(&mut salt)
            .expect("the operating system's random generator failed");
        rng.fill(&mut prefix)
            .expect("the operating system's random generator failed");
        Self::with_parameters(file_key, key_version, document, salt, prefix)
    }

    /// Fixed salt and nonce prefix: for known-answer tests only.
    pub fn with_parameters(
        file_key: &[u8; 32],
        key_version: u32,
        document: Uuid,
        salt: [u8; SALT],
        prefix: [u8; PREFIX],
    ) -> Self {
        let keys = derive(file_key, &salt, document);
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.push(VERSION);
        header.push(ALGORITHM_AES256_GCM_HKDF_SHA256);
        header.extend_from_slice(&key_version.to_be_bytes());
        header.extend_from_slice(&salt);
        header.extend_from_slice(&prefix);
        header.extend_from_slice(&(CHUNK_SIZE as u32).to_be_bytes());
        let commitment = commit(&keys.commitment, &header);
        header.extend_from_slice(&commitment);
        Self {
            keys,
            header,
            prefix,
            index: 0,
            pending: Vec::with_capacity(CHUNK_SIZE * 2),
            header_sent: false,
        }
    }

    fn seal(&mut self, chunk: &[u8], last: bool, out: &mut Vec<u8>) {
        let sealed = self
            .keys
            .aead
            .encrypt(
                &Nonce::from(nonce(&self.prefix, self.index, last)),
                Payload {
                    msg: chunk,
                    aad: &self.header,
                },
            )
            .expect("AES-GCM encryption of a 64 KiB chunk cannot fail");
        out.extend_from_slice(&sealed);
        self.index += 1;
    }

    /// Ciphertext for as much of the input as can be sealed now (a chunk is sealed only when
    /// more data follows it, since the last one is marked).
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.header_sent {
            out.extend_from_slice(&self.header);
            self.header_sent = true;
        }
        self.pending.extend_from_slice(data);
        while self.pending.len() > CHUNK_SIZE {
            let rest = self.pending.split_off(CHUNK_SIZE);
            let chunk = std::mem::replace(&mut self.pending, rest);
            self.seal(&chunk, false, &mut out);
        }
        out
    }

    pub fn finish(mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.header_sent {
            out.extend_from_slice(&self.header);
        }
        let last = std::mem::take(&mut self.pending);
        self.seal(&last, true, &mut out);
        out
    }
}

pub struct Decryptor {
    file_key: Zeroizing<[u8; 32]>,
    document: Uuid,
    state: Option<(Keys, Vec<u8>, [u8; PREFIX])>,
    index: u32,
    buffer: Vec<u8>,
    done: bool,
}

impl Decryptor {
    pub fn new(file_key: &[u8; 32], document: Uuid) -> Self {
        Self {
            file_key: Zeroizing::new(*file_key),
            document,
            state: None,
            index: 0,
            buffer: Vec::new(),
            done: false,
        }
    }

    /// The key version recorded in a header (to pick the key before decrypting).
    pub fn key_version(header: &[u8]) -> Result<u32, StreamError> {
        if header.len() < 10 || &header[..4] != MAGIC {
            return Err(StreamError::BadMagic);
        }
        Ok(u32::from_be_bytes([
            header[6], header[7], header[8], header[9],
        ]))
    }

    fn open_header(&mut self) -> Result<(), StreamError> {
        let header = &self.buffer[..HEADER_LEN];
        if &header[..4] != MAGIC {
            return Err(StreamError::BadMagic);
        }
        if header[4] != VERSION || header[5] != ALGORITHM_AES256_GCM_HKDF_SHA256 {
            return Err(StreamError::Unsupported);
        }
        let salt = &header[10..10 + SALT];
        let mut prefix = [0u8; PREFIX];
        prefix.copy_from_slice(&header[10 + SALT..10 + SALT + PREFIX]);
        let chunk_size = u32::from_be_bytes(
            header[10 + SALT + PREFIX..14 + SALT + PREFIX]
                .try_into()
                .map_err(|_| StreamError::MalformedHeader)?,
        );
        if chunk_size as usize != CHUNK_SIZE {
            return Err(StreamError::Unsupported);
        }
        let keys = derive(&self.file_key, salt, self.document);
        let expected = commit(&keys.commitment, &header[..HEADER_LEN - 32]);
        let matches: bool =
            subtle::ConstantTimeEq::ct_eq(&expected[..], &header[HEADER_LEN - 32..]).into();
        if !matches {
            return Err(StreamError::WrongKey);
        }
        let header = header.to_vec();
        self.buffer.drain(..HEADER_LEN);
        self.state = Some((keys, header, prefix));
        Ok(())
    }

    fn open_chunk(&mut self, len: usize, last: bool) -> Result<Vec<u8>, StreamError> {
        let (keys, header, prefix) = self.state.as_ref().ok_or(StreamError::Truncated)?;
        let sealed: Vec<u8> = self.buffer.drain(..len).collect();
        let plain = keys
            .aead
            .decrypt(
                &Nonce::from(nonce(prefix, self.index, last)),
                Payload {
                    msg: &sealed,
                    aad: header,
                },
            )
            .map_err(|_| StreamError::ChunkVerification)?;
        self.index += 1;
        Ok(plain)
    }

    /// Verified plaintext for as much as can be released now.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<u8>, StreamError> {
        if self.done {
            return Err(StreamError::TrailingData);
        }
        self.buffer.extend_from_slice(data);
        if self.state.is_none() {
            if self.buffer.len() >= MAGIC.len() && &self.buffer[..MAGIC.len()] != MAGIC {
                return Err(StreamError::BadMagic);
            }
            if self.buffer.len() < HEADER_LEN {
                return Ok(Vec::new());
            }
            self.open_header()?;
        }
        let mut out = Vec::new();
        // A full chunk is known not to be the last only once more bytes follow it.
        while self.buffer.len() > CHUNK_SIZE + TAG {
            out.extend_from_slice(&self.open_chunk(CHUNK_SIZE + TAG, false)?);
        }
        Ok(out)
    }

    /// The last chunk; fails if the stream was truncated.
    pub fn finish(mut self) -> Result<Vec<u8>, StreamError> {
        if self.state.is_none() {
            if self.buffer.len() >= MAGIC.len() && &self.buffer[..MAGIC.len()] != MAGIC {
                return Err(StreamError::BadMagic);
            }
            if self.buffer.len() < HEADER_LEN {
                return Err(StreamError::Truncated);
            }
            self.open_header()?;
        }
        if self.buffer.len() < TAG {
            return Err(StreamError::Truncated);
        }
        let len = self.buffer.len();
        let plain = self.open_chunk(len, true).map_err(|e| match e {
            // A non-last chunk where the last was expected: the stream was cut short.
            StreamError::ChunkVerification if len == CHUNK_SIZE + TAG => StreamError::Truncated,
            other => other,
        })?;
        self.done = true;
        Ok(plain)
    }
}

/// Convenience for tests and small inputs.
pub fn encrypt_all(file_key: &[u8; 32], key_version: u32, document: Uuid, data: &[u8]) -> Vec<u8> {
    let mut e = Encryptor::new(file_key, key_version, document);
    let mut out = e.push(data);
    out.extend_from_slice(&e.finish());
    out
}

pub fn decrypt_all(
    file_key: &[u8; 32],
    document: Uuid,
    data: &[u8],
) -> Result<Vec<u8>, StreamError> {
    let mut d = Decryptor::new(file_key, document);
    let mut out = d.push(data)?;
    out.extend_from_slice(&d.finish()?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_len_is_exact() {
        let key = [7u8; 32];
        for n in [
            0usize,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            3 * CHUNK_SIZE,
            200_001,
        ] {
            let mut e = Encryptor::new(&key, 1, Uuid::nil());
            let data = vec![1u8; n];
            let mut total = 0;
            for piece in data.chunks(10_000) {
                total += e.push(piece).len();
            }
            total += e.finish().len();
            assert_eq!(total as u64, sealed_len(n as u64), "{n} bytes");
        }
    }

    const KEY: [u8; 32] = [0x42; 32];

    fn doc() -> Uuid {
        Uuid::parse_str("01900000-0000-7000-8000-000000000001").unwrap()
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn chunk_offsets(total: usize) -> Vec<usize> {
        (HEADER_LEN..total).step_by(CHUNK_SIZE + TAG).collect()
    }

    #[test]
    fn round_trips_at_every_boundary() {
        for len in [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            3 * CHUNK_SIZE,
            3 * CHUNK_SIZE + 17,
        ] {
            let data = sample(len);
            let sealed = encrypt_all(&KEY, 1, doc(), &data);
            assert_eq!(
                decrypt_all(&KEY, doc(), &sealed).unwrap(),
                data,
                "len {len}"
            );
            // Fed in odd pieces, too.
            let mut d = Decryptor::new(&KEY, doc());
            let mut out = Vec::new();
            for piece in sealed.chunks(7919) {
                out.extend(d.push(piece).unwrap());
            }
            out.extend(d.finish().unwrap());
            assert_eq!(out, data, "len {len} in pieces");
        }
    }

    #[test]
    fn every_tampering_is_detected() {
        let data = sample(3 * CHUNK_SIZE + 100);
        let sealed = encrypt_all(&KEY, 1, doc(), &data);
        let offsets = chunk_offsets(sealed.len());
        assert_eq!(offsets.len(), 4);

        let mut flipped_header = sealed.clone();
        flipped_header[12] ^= 1;
        assert_eq!(
            decrypt_all(&KEY, doc(), &flipped_header),
            Err(StreamError::WrongKey)
        );

        let mut flipped_chunk = sealed.clone();
        flipped_chunk[offsets[1] + 5] ^= 1;
        assert_eq!(
            decrypt_all(&KEY, doc(), &flipped_chunk),
            Err(StreamError::ChunkVerification)
        );

        let truncated = &sealed[..offsets[2]];
        assert_eq!(
            decrypt_all(&KEY, doc(), truncated),
            Err(StreamError::Truncated)
        );

        let mut swapped = sealed[..offsets[0]].to_vec();
        swapped.extend_from_slice(&sealed[offsets[1]..offsets[2]]);
        swapped.extend_from_slice(&sealed[offsets[0]..offsets[1]]);
        swapped.extend_from_slice(&sealed[offsets[2]..]);
        assert_eq!(
            decrypt_all(&KEY, doc(), &swapped),
            Err(StreamError::ChunkVerification)
        );

        let mut appended = sealed.clone();
        appended.extend_from_slice(&sealed[offsets[1]..offsets[2]]);
        assert!(decrypt_all(&KEY, doc(), &appended).is_err());

        // Another document's header (and body) under this document's id.
        let other = encrypt_all(&KEY, 1, Uuid::now_v7(), &data);
        assert_eq!(decrypt_all(&KEY, doc(), &other), Err(StreamError::WrongKey));
        let mut moved_header = other[..HEADER_LEN].to_vec();
        moved_header.extend_from_slice(&sealed[HEADER_LEN..]);
        assert!(decrypt_all(&KEY, doc(), &moved_header).is_err());

        assert_eq!(
            decrypt_all(&[0x43; 32], doc(), &sealed),
            Err(StreamError::WrongKey)
        );
        assert_eq!(decrypt_all(&KEY, doc(), b"PK\x03\x04 not ours at all, but long enough to be a header.............................."), Err(StreamError::BadMagic));
    }

    #[test]
    fn no_plaintext_is_released_before_its_tag() {
        let data = sample(2 * CHUNK_SIZE + 10);
        let mut sealed = encrypt_all(&KEY, 1, doc(), &data);
        let offsets = chunk_offsets(sealed.len());
        sealed[offsets[0] + 100] ^= 1;
        let mut d = Decryptor::new(&KEY, doc());
        // Everything up to the end of the first chunk plus one byte: the chunk is complete
        // and known not to be last, so it is checked — and refused, releasing nothing.
        assert_eq!(
            d.push(&sealed[..offsets[1] + 1]),
            Err(StreamError::ChunkVerification)
        );
    }

    /// Known-answer vector: fixed key, document, salt and nonce prefix. If this changes, the
    /// format changed and every stored document would become unreadable.
    #[test]
    fn known_answer_vector() {
        let mut e = Encryptor::with_parameters(&KEY, 7, doc(), [0x11; SALT], [0x22; PREFIX]);
        let mut sealed = e.push(b"loanfolio known answer");
        sealed.extend(e.finish());
        let hex: String = sealed.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(&hex[..24], "4c4644530101000000071111");
        assert_eq!(hex.len(), (HEADER_LEN + 22 + TAG) * 2);
        assert_eq!(hex, KNOWN_VECTOR);
        assert_eq!(
            decrypt_all(&KEY, doc(), &sealed).unwrap(),
            b"loanfolio known answer"
        );
        assert_eq!(Decryptor::key_version(&sealed).unwrap(), 7);
    }

    /// key 0x42×32, document 01900000-0000-7000-8000-000000000001, key version 7,
    /// salt 0x11×32, nonce prefix 0x22×7, plaintext "loanfolio known answer".
    const KNOWN_VECTOR: &str = concat!(
        "4c464453010100000007",
        "1111111111111111111111111111111111111111111111111111111111111111",
        "22222222222222",
        "00010000",
        "ef4fc8251fdfdf8e5e8b88089e8abc90f7ac6658d573ddd28df1ea3686175226",
        "d0ec99000dd2023bd9ccdac630eea0b8892404e77fc9e19b2dd46107d114da6bc6a7d1948c50",
    );
}
