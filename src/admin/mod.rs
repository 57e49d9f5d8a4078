//! Operator tasks: backup and restore, the demo seed, and the periodic housekeeping.

pub mod backup;
pub mod demo;
pub mod housekeeping;
