//! Pure types and rules: validated inputs that can only hold valid values.

pub mod credit;
pub mod document;
pub mod lead;
pub mod loan;
pub mod mask;
pub mod money;
pub mod ssn;
