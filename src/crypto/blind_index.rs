//! SSN blind index (docs/security.md): HMAC-SHA256 under a key of its own over the normalized
//! SSN, truncated to `BITS` bits. At the projected scale (10⁵–10⁶ leads) each index value is
//! shared by many leads (1,000,000 / 65,536 ≈ 15), so the index alone never identifies a
//! borrower; candidates are confirmed by decrypting.

use ring::hmac;

pub const BITS: u32 = 16;

/// The index of an SSN given as 9 digits (dashes already removed).
pub fn ssn_index(key: &[u8; 32], ssn_digits: &str) -> i32 {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, ssn_digits.as_bytes());
    let bytes = tag.as_ref();
    let value = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    (value >> (32 - BITS)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_bounded_and_keyed() {
        let key = [1u8; 32];
        let a = ssn_index(&key, "123456789");
        assert_eq!(a, ssn_index(&key, "123456789"));
        assert!((0..(1 << BITS)).contains(&a));
        assert_ne!(
            ssn_index(&[2u8; 32], "123456789"),
            a,
            "another key, another index (almost surely)"
        );
        // Truncation makes collisions common: among 200,000 SSNs most index values repeat.
        let mut seen = std::collections::HashSet::new();
        let collisions = (0..200_000u32)
            .filter(|n| !seen.insert(ssn_index(&key, &format!("{:09}", 100_000_000 + n))))
            .count();
        assert!(collisions > 100_000, "{collisions}");
    }
}
