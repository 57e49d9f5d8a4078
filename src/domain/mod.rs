//! Value types shared by several aggregates: validated inputs that can only hold valid values.

pub mod mask;
pub mod money;
pub mod ssn;

/// A timestamp as the API writes it (RFC 3339).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
