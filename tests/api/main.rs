//! The integration suite: one binary (fast to link), a module per capability. Every test
//! gets its own database (from a migrated template), RabbitMQ prefix, buckets and Redis
//! key prefix against the real local stack that `scripts/test` provisions.

mod helpers;

mod audit;
mod auth;
mod authorization;
mod browser;
mod config_startup;
mod conformance;
mod console;
mod console_browser;
mod credit;
mod disposal;
mod disposal_restore;
mod documents;
mod errors;
mod export;
mod faults;
mod fuzz_corpus;
mod idempotency;
mod keycloak_realm;
mod keys;
mod leads;
mod limits;
mod loans;
mod los;
mod migrate_check;
mod needs_list;
mod notifications;
mod observability;
mod pii;
mod queue;
mod readiness;
mod reminders;
mod restore_drill;
mod retention;
mod sessions;
mod tls;
mod upload_links;
mod vault;
mod worker_crash;
