//! Background workers run by `worker` (and `serve` unless `--no-workers`).

pub mod pipeline;
pub mod reconciler;
