//! Operator tasks: backup and restore, key rotation, the demo seed, and the periodic
//! housekeeping.

pub mod backup;
pub mod demo;
pub mod housekeeping;
pub mod keys;
