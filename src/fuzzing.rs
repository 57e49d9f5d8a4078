//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`, cargo-fuzz's layout): every
//! parser of bytes an outsider controls. Each states its properties as assertions, so a
//! fuzzer that breaks one finds a panic. `scripts/fuzz` runs them with libFuzzer on the
//! nightly toolchain; the committed corpus (`fuzz/corpus/<target>/`) is replayed through
//! these same functions by `cargo test` on stable (tests/api/fuzz_corpus.rs), so CI needs
//! no nightly and a crash once found stays fixed.

use serde_json::{Value, json};
use uuid::Uuid;

/// The fixed "now" of the signature target (the window is checked against it).
const NOW: i64 = 1_800_000_000;

/// `Loanfolio-Signature` headers: a header is accepted only with 1–5 candidates, a
/// timestamp in the window, and at most 512 bytes; verifying costs one HMAC per secret.
pub fn webhook_signature(data: &[u8]) {
    use crate::integrations::webhook_signature::{MAX_HEADER_BYTES, MAX_SIGNATURES, parse};
    if let Ok(header) = parse(data, NOW) {
        assert!(data.len() <= MAX_HEADER_BYTES);
        assert!((1..=MAX_SIGNATURES).contains(&header.candidates.len()));
        assert!((NOW - header.timestamp).abs() <= 300);
        let keys = crate::integrations::webhook_signature::WebhookKeys::new(&[
            secrecy::SecretString::from("fuzz-secret-one".to_owned()),
            secrecy::SecretString::from("fuzz-secret-two".to_owned()),
        ]);
        // No fuzzer forges an HMAC-SHA256; what matters is the cost.
        assert!(!keys.verify(&header, data));
        assert_eq!(keys.hmacs_computed(), 2);
    }
}

/// The streaming AEAD reader: arbitrary bytes never decrypt (nor panic), however they are
/// split; a real ciphertext decrypts whatever the split, and truncated, reordered,
/// appended-to or bit-flipped copies of it never do.
pub fn stream_aead(data: &[u8]) {
    use crate::crypto::stream::{CHUNK_SIZE, Decryptor, Encryptor, decrypt_all};
    let key = [7u8; 32];
    let document = Uuid::from_u128(0x0190_aaaa_0000_7000_8000_0000_0000_0001);
    assert!(
        decrypt_all(&key, document, data).is_err(),
        "forged bytes decrypted"
    );
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    let Some((&size, rest)) = rest.split_first() else {
        return;
    };
    // A plaintext of 0 to ~3 chunks, and a known ciphertext of it.
    let length = usize::from(size) * (CHUNK_SIZE / 80) + rest.len();
    let plain: Vec<u8> = (0..length).map(|i| (i % 251) as u8).collect();
    let mut encryptor = Encryptor::with_parameters(&key, 1, document, [3; 32], [5; 7]);
    let mut sealed = encryptor.push(&plain);
    sealed.extend_from_slice(&encryptor.finish());
    // Decrypted in pieces at the boundaries the input chooses: the same plaintext.
    let mut decryptor = Decryptor::new(&key, document);
    let mut out = Vec::new();
    let mut at = 0;
    for &step in rest.iter().take(64) {
        let end = (at + usize::from(step) * 997 + 1).min(sealed.len());
        out.extend(decryptor.push(&sealed[at..end]).expect("a real ciphertext"));
        at = end;
    }
    out.extend(decryptor.push(&sealed[at..]).expect("a real ciphertext"));
    out.extend(decryptor.finish().expect("a real ciphertext"));
    assert_eq!(out, plain);
    // One mutation the input chooses.
    let pick = |i: usize| rest.get(i).copied().map_or(0, usize::from);
    let mut tampered = sealed.clone();
    match op % 5 {
        0 => tampered.truncate(pick(0) * sealed.len() / 256),
        1 => tampered.extend_from_slice(&rest[..rest.len().min(64)]),
        2 => {
            let bit = (pick(0) << 8 | pick(1)) * 7919 % (sealed.len() * 8);
            tampered[bit / 8] ^= 1 << (bit % 8);
        }
        3 => {
            // Swap two whole chunks (with their tags) when there are two.
            let header = crate::crypto::stream::HEADER_LEN;
            let chunk = CHUNK_SIZE + 16;
            if sealed.len() >= header + 2 * chunk {
                let (a, b) = (header, header + chunk);
                let first = sealed[a..a + chunk].to_vec();
                let second = sealed[b..b + chunk].to_vec();
                tampered[a..a + chunk].copy_from_slice(&second);
                tampered[b..b + chunk].copy_from_slice(&first);
            } else {
                tampered.push(0);
            }
        }
        _ => {
            // Another document's id: the object moved between documents.
            assert!(decrypt_all(&key, Uuid::from_u128(2), &sealed).is_err());
            tampered.clear();
        }
    }
    if tampered != sealed {
        assert!(
            decrypt_all(&key, document, &tampered).is_err(),
            "a tampered ciphertext decrypted (op {})",
            op % 5
        );
    }
}

/// JSON merge patches (RFC 7396) on a lead: applying a patch twice is applying it once,
/// and whatever comes out is validated without panicking.
pub fn merge_patch(data: &[u8]) {
    use crate::leads::{LeadInput, merge_patch};
    let Ok(patch) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut lead = json!({
        "first_name": "Casey", "last_name": "Canary", "email": "c@example.org",
        "ssn": "219-09-9999", "date_of_birth": "1971-03-14", "annual_income": "87654.32",
        "address": {"line1": "1 A St", "city": "Springfield", "state": "IL", "postal_code": "62701"},
        "status": "new"
    });
    merge_patch(&mut lead, &patch);
    let once = lead.clone();
    merge_patch(&mut lead, &patch);
    assert_eq!(lead, once, "a merge patch is idempotent");
    if let Ok(input) = serde_json::from_value::<LeadInput>(once) {
        let today =
            time::Date::from_calendar_date(2026, time::Month::December, 5).expect("a real date");
        let _ = input.validate(today);
    }
}

/// Magic-byte sniffing and the `/Encrypt` finder: never a panic, and the finder's answer
/// does not depend on where the stream was cut.
pub fn sniff(data: &[u8]) {
    use crate::scan::sniff::{PdfEncryption, sniff};
    let _ = sniff(data);
    let mut whole = PdfEncryption::default();
    whole.feed(data);
    let mut pieces = PdfEncryption::default();
    let step = data.first().map_or(1, |b| usize::from(*b % 13) + 1);
    for chunk in data.chunks(step) {
        pieces.feed(chunk);
    }
    assert_eq!(whole.found(), pieces.found(), "split at every {step} bytes");
}

/// Filenames and the Content-Disposition made of them: never empty, at most 200
/// characters, no separator, control or bidi override; the header is a valid ASCII value.
pub fn filename(data: &[u8]) {
    use crate::documents::{content_disposition, sanitize_filename};
    let raw = String::from_utf8_lossy(data);
    let clean = sanitize_filename(&raw);
    assert!(!clean.is_empty() && clean.chars().count() <= 200);
    assert!(!clean.chars().any(|c| c.is_control()
        || matches!(c, '/' | '\\')
        || matches!(c as u32, 0x202A..=0x202E | 0x2066..=0x2069 | 0x200E | 0x200F | 0x061C)));
    assert!(!clean.starts_with('.'));
    let header = content_disposition(&raw);
    assert!(header.is_ascii(), "{header}");
    assert!(http::HeaderValue::from_str(&header).is_ok(), "{header}");
    assert!(header.starts_with("attachment; filename=\""));
}

/// `X-Request-Id`: kept only when short and plain, else a fresh UUID — never anything a
/// log line or header could be injected with.
pub fn request_id(data: &[u8]) {
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let id = crate::telemetry::accept_request_id(Some(&value));
    assert!(!id.is_empty() && id.len() <= 128);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    );
}

/// A target: bytes in, a panic when a property breaks.
pub type Target = fn(&[u8]);

/// Every target by its directory name under `fuzz/corpus/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("webhook_signature", webhook_signature),
    ("stream_aead", stream_aead),
    ("merge_patch", merge_patch),
    ("sniff", sniff),
    ("filename", filename),
    ("request_id", request_id),
];
