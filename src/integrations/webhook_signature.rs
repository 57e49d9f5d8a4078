//! The LOS webhook's `Loanfolio-Signature` header (docs/api.md, "LOS webhook"):
//! `t=<unix seconds>,v1=<64 lowercase hex>[,v1=…]`, where each `v1` is
//! HMAC-SHA256(secret, "<t>.<raw body>") under one of the accepted secrets.
//!
//! The header is judged before the body is read, so a forged request costs microseconds
//! whatever its size: at most [`MAX_HEADER_BYTES`], at most [`MAX_SIGNATURES`] `v1` values
//! of exactly 64 lowercase hex digits, and a timestamp inside the replay window. Only then
//! is the body read (under `los.webhook_body_limit_bytes`) and the HMAC computed — once
//! per configured secret, never once per candidate — and compared with every candidate in
//! constant time.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use ring::hmac;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::config::{ConfigError, LosSettings};

/// Signatures whose timestamp is further than this from now are refused (replays).
pub const WINDOW_SECS: i64 = 300;
/// Several values are allowed while a secret is rotated; more is never legitimate.
pub const MAX_SIGNATURES: usize = 5;
/// `t=` + 10–12 digits + 5 × `,v1=` + 64 hex, with room for spaces and other schemes.
pub const MAX_HEADER_BYTES: usize = 512;

/// A well-formed header whose timestamp is fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    pub candidates: Vec<[u8; 32]>,
}

/// Why a header was refused before the body was read; both answer 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Missing, too long, a malformed part, no `t`, no `v1`, too many `v1`, or a `v1` that
    /// is not exactly 64 lowercase hex digits: `invalid_signature`.
    Malformed,
    /// Well formed, but the timestamp is outside the window: `stale_timestamp`.
    Stale,
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn decode_v1(value: &str) -> Option<[u8; 32]> {
    let bytes = value.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(out)
}

/// Parse and judge the header at `now` (unix seconds). Cost is linear in the header,
/// which is at most [`MAX_HEADER_BYTES`].
pub fn parse(header: &[u8], now: i64) -> Result<SignatureHeader, HeaderError> {
    if header.len() > MAX_HEADER_BYTES {
        return Err(HeaderError::Malformed);
    }
    let header = std::str::from_utf8(header).map_err(|_| HeaderError::Malformed)?;
    let mut timestamp = None;
    let mut candidates = Vec::with_capacity(2);
    for part in header.split(',') {
        let (key, value) = part.trim().split_once('=').ok_or(HeaderError::Malformed)?;
        match key {
            "t" => {
                if timestamp.is_some()
                    || value.is_empty()
                    || value.len() > 12
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(HeaderError::Malformed);
                }
                timestamp = Some(value.parse::<i64>().map_err(|_| HeaderError::Malformed)?);
            }
            "v1" => {
                if candidates.len() == MAX_SIGNATURES {
                    return Err(HeaderError::Malformed);
                }
                candidates.push(decode_v1(value).ok_or(HeaderError::Malformed)?);
            }
            // Other schemes (a future v2) are ignored, as Stripe-style verifiers do.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(HeaderError::Malformed)?;
    if candidates.is_empty() {
        return Err(HeaderError::Malformed);
    }
    if (now - timestamp).abs() > WINDOW_SECS {
        return Err(HeaderError::Stale);
    }
    Ok(SignatureHeader {
        timestamp,
        candidates,
    })
}

/// The accepted webhook secrets as HMAC keys, built once at start.
pub struct WebhookKeys {
    keys: Vec<hmac::Key>,
    /// HMACs computed so far: what a forged request can cost is bounded by a unit test.
    computed: AtomicU64,
}

impl std::fmt::Debug for WebhookKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookKeys")
            .field("secrets", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl WebhookKeys {
    pub fn new(secrets: &[SecretString]) -> Self {
        Self {
            keys: secrets
                .iter()
                .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.expose_secret().as_bytes()))
                .collect(),
            computed: AtomicU64::new(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn hmacs_computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    /// Whether any candidate is the HMAC of `"<t>.<body>"` under any accepted secret: one
    /// HMAC per secret, each compared with every candidate in constant time.
    pub fn verify(&self, header: &SignatureHeader, body: &[u8]) -> bool {
        let t = header.timestamp.to_string();
        let mut matched = 0u8;
        for key in &self.keys {
            let mut context = hmac::Context::with_key(key);
            context.update(t.as_bytes());
            context.update(b".");
            context.update(body);
            let tag = context.sign();
            self.computed.fetch_add(1, Ordering::Relaxed);
            for candidate in &header.candidates {
                matched |= tag.as_ref().ct_eq(candidate).unwrap_u8();
            }
        }
        matched == 1
    }
}

/// How often a `webhook_secrets_file` is looked at again (its modification time), so a
/// replaced file takes effect without a restart while no request reads the file.
const RELOAD_EVERY: Duration = Duration::from_secs(30);

/// The accepted secrets, loaded at start; a secrets file is re-read when it changes, looked
/// at no more than every [`RELOAD_EVERY`] and only for well-formed, fresh requests.
pub struct WebhookSecrets {
    settings: LosSettings,
    current: RwLock<Loaded>,
}

struct Loaded {
    keys: Arc<WebhookKeys>,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecrets").finish_non_exhaustive()
    }
}

fn modified(path: Option<&Path>) -> Option<SystemTime> {
    std::fs::metadata(path?).and_then(|m| m.modified()).ok()
}

impl WebhookSecrets {
    /// Fails (naming the key) when a configured secrets file cannot be read.
    pub fn load(settings: &LosSettings) -> Result<Self, ConfigError> {
        let keys = Arc::new(WebhookKeys::new(&settings.webhook_secrets()?));
        Ok(Self {
            current: RwLock::new(Loaded {
                keys,
                modified: modified(settings.webhook_secrets_file()),
                checked: Instant::now(),
            }),
            settings: settings.clone(),
        })
    }

    /// The keys to verify with now.
    pub fn current(&self) -> Result<Arc<WebhookKeys>, ConfigError> {
        {
            let loaded = self.current.read().unwrap_or_else(|p| p.into_inner());
            if self.settings.webhook_secrets_file().is_none()
                || loaded.checked.elapsed() < RELOAD_EVERY
            {
                return Ok(loaded.keys.clone());
            }
        }
        let mut loaded = self.current.write().unwrap_or_else(|p| p.into_inner());
        loaded.checked = Instant::now();
        let now = modified(self.settings.webhook_secrets_file());
        if now != loaded.modified {
            loaded.keys = Arc::new(WebhookKeys::new(&self.settings.webhook_secrets()?));
            loaded.modified = now;
        }
        Ok(loaded.keys.clone())
    }
}

/// The signature header value for `body` at `t` under `secret` (the simulator and tests).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = hmac::Context::with_key(&key);
    context.update(t.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn keys(secrets: &[&str]) -> WebhookKeys {
        WebhookKeys::new(
            &secrets
                .iter()
                .map(|s| SecretString::from((*s).to_owned()))
                .collect::<Vec<_>>(),
        )
    }

    fn v1(header: &str) -> &str {
        header.split_once("v1=").unwrap().1
    }

    #[test]
    fn signatures_verify_with_any_current_secret() {
        let body = br#"{"event_id":"e1"}"#;
        let header = format!(
            "t={NOW},v1={},v1={}",
            v1(&sign("old", NOW, body)),
            v1(&sign("new", NOW, body))
        );
        let parsed = parse(header.as_bytes(), NOW).unwrap();
        assert_eq!(parsed.candidates.len(), 2);
        assert!(
            keys(&["new"]).verify(&parsed, body),
            "rotation: the new one"
        );
        assert!(keys(&["old", "other"]).verify(&parsed, body));
        assert!(!keys(&["wrong"]).verify(&parsed, body));
        assert!(!keys(&["new"]).verify(&parsed, b"{}"), "the body is signed");
        let moved = SignatureHeader {
            timestamp: NOW + 1,
            ..parsed
        };
        assert!(!keys(&["new"]).verify(&moved, body), "the time is signed");
    }

    #[test]
    fn malformed_headers_are_refused_before_any_hmac() {
        let good = v1(&sign("s", NOW, b"x")).to_owned();
        for header in [
            String::new(),
            format!("v1={good}"),
            format!("t={NOW}"),
            format!("t={NOW},v1=zz"),
            format!("t={NOW},v1={}", good.to_uppercase()),
            format!("t={NOW},v1={}", &good[..62]),
            format!("t={NOW},v1={good}00"),
            format!("t=-5,v1={good}"),
            format!("t={NOW},t={NOW},v1={good}"),
            format!("t={NOW},v1={good},garbage"),
            format!("t={NOW}{},v1={good}", " ".repeat(600)),
            format!("t={NOW}{}", format!(",v1={good}").repeat(6)),
        ] {
            assert_eq!(
                parse(header.as_bytes(), NOW),
                Err(HeaderError::Malformed),
                "{header:.80}"
            );
        }
        assert_eq!(parse(&[0xff, 0xfe], NOW), Err(HeaderError::Malformed));
        let five = format!("t={NOW}{}", format!(",v1={good}").repeat(5));
        assert_eq!(parse(five.as_bytes(), NOW).unwrap().candidates.len(), 5);
        let future = format!("t={},v1={good}", NOW + WINDOW_SECS + 1);
        assert_eq!(parse(future.as_bytes(), NOW), Err(HeaderError::Stale));
        let past = format!("t={},v1={good}", NOW - WINDOW_SECS - 1);
        assert_eq!(parse(past.as_bytes(), NOW), Err(HeaderError::Stale));
    }

    /// The defect: every candidate × every secret recomputed the HMAC over the whole body.
    /// Now a request costs one HMAC per secret, whatever it carries.
    #[test]
    fn hmacs_per_request_are_bounded_by_the_secrets() {
        let keys = keys(&["a", "b", "c"]);
        let body = vec![b'x'; 1 << 20];
        let forged = format!("t={NOW}{}", format!(",v1={}", "ab".repeat(32)).repeat(5));
        let parsed = parse(forged.as_bytes(), NOW).unwrap();
        assert!(!keys.verify(&parsed, &body));
        assert_eq!(
            keys.hmacs_computed(),
            3,
            "one per secret, not per candidate"
        );
        let thousands = format!("t={NOW}{}", format!(",v1={}", "ab".repeat(32)).repeat(2000));
        assert!(parse(thousands.as_bytes(), NOW).is_err());
        assert_eq!(keys.hmacs_computed(), 3, "a refused header costs no HMAC");
    }
}
