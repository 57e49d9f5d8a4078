//! A Social Security number that can only hold a valid one, and never prints itself.

use std::fmt;

use zeroize::Zeroizing;

#[derive(Clone, PartialEq, Eq)]
pub struct Ssn(Zeroizing<String>);

impl fmt::Debug for Ssn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ssn(***)")
    }
}

impl Ssn {
    /// `123-45-6789` or `123456789`; never-issued ranges are refused (area 000, 666,
    /// 900–999; group 00; serial 0000).
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        let digits: String = input.chars().filter(|c| *c != '-').collect();
        // Bytes, not string slices: `&input[3..4]` panicked inside a multi-byte character
        // (found by the merge_patch fuzz target).
        let bytes = input.as_bytes();
        let dashed_ok =
            input.len() == 9 || (input.len() == 11 && bytes[3] == b'-' && bytes[6] == b'-');
        if !dashed_ok || digits.len() != 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must be 9 digits, as 123-45-6789 or 123456789");
        }
        let area: u16 = digits[0..3].parse().unwrap_or(0);
        let group: u16 = digits[3..5].parse().unwrap_or(0);
        let serial: u16 = digits[5..9].parse().unwrap_or(0);
        if area == 0 || area == 666 || area >= 900 {
            return Err("the area number (first three digits) is never issued");
        }
        if group == 0 {
            return Err("the group number (middle two digits) is never issued");
        }
        if serial == 0 {
            return Err("the serial number (last four digits) is never issued");
        }
        Ok(Self(Zeroizing::new(digits)))
    }

    pub fn digits(&self) -> &str {
        &self.0
    }

    pub fn formatted(&self) -> String {
        format!("{}-{}-{}", &self.0[0..3], &self.0[3..5], &self.0[5..9])
    }

    pub fn masked(&self) -> String {
        format!("***-**-{}", &self.0[5..9])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_forms() {
        let a = Ssn::parse("123-45-6789").unwrap();
        assert_eq!(a.digits(), "123456789");
        assert_eq!(a.formatted(), "123-45-6789");
        assert_eq!(a.masked(), "***-**-6789");
        assert_eq!(Ssn::parse("123456789").unwrap(), a);
        assert_eq!(format!("{a:?}"), "Ssn(***)");
    }

    #[test]
    fn never_issued_and_malformed() {
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "999-12-3456",
            "123-00-4567",
            "123-45-0000",
            "12-345-6789",
            "1234-5-6789",
            "12345678",
            "1234567890",
            "abc-de-fghi",
            "123 45 6789",
            "",
            // Eleven bytes with a multi-byte character across the dash positions.
            "123\u{34c}sn9s.I",
            "12\u{e9}-45-678",
        ] {
            assert!(Ssn::parse(bad).is_err(), "{bad}");
        }
    }
}
