//! Money: exact decimals with two places, sent as strings (`"425000.10"`); requests may
//! send a JSON number too.

use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::{self, Deserializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money(Decimal);

impl Money {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let text = text.trim();
        // Plain decimal notation only: no exponents, no signs other than a leading minus.
        if text.is_empty()
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            return Err("must be a decimal amount");
        }
        let value: Decimal = text.parse().map_err(|_| "must be a decimal amount")?;
        Self::new(value)
    }

    pub fn new(value: Decimal) -> Result<Self, &'static str> {
        if value.is_sign_negative() {
            return Err("must not be negative");
        }
        if value.scale() > 2 && value.round_dp(2) != value {
            return Err("must have at most two decimal places");
        }
        if value > Decimal::from(1_000_000_000_000i64) {
            return Err("is too large");
        }
        let mut value = value.round_dp(2);
        value.rescale(2);
        Ok(Self(value))
    }

    pub fn value(&self) -> Decimal {
        self.0
    }
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A money field as it arrives: a string or a JSON number, validated later so the error
/// names the field.
#[derive(Debug, Clone)]
pub struct MoneyInput(pub String);

impl<'de> Deserialize<'de> for MoneyInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(serde_json::Number),
        }
        match Raw::deserialize(deserializer)
            .map_err(|_| de::Error::custom("expected a decimal string or number"))?
        {
            Raw::Text(s) => Ok(Self(s)),
            Raw::Number(n) => Ok(Self(n.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_places_exact() {
        assert_eq!(Money::parse("85000").unwrap().to_string(), "85000.00");
        assert_eq!(Money::parse("425000.1").unwrap().to_string(), "425000.10");
        assert_eq!(Money::parse("0.10").unwrap().to_string(), "0.10");
        assert!(Money::parse("-1").is_err());
        assert!(Money::parse("1.005").is_err());
        assert!(Money::parse("abc").is_err());
        assert!(Money::parse("1e3").is_err());
    }
}
