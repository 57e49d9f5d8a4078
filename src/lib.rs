//! Loanfolio: a self-hosted platform for mortgage agents. See docs/architecture.md for the model and
//! README.md for the source layout.

pub mod app;
pub mod auth;
pub mod backup;
pub mod cache;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod db;
pub mod demo;
pub mod domain;
pub mod error;
pub mod fuzzing;
pub mod housekeeping;
pub mod http;
pub mod integrations;
pub mod metrics;
pub mod notify;
pub mod queue;
pub mod ratelimit;
pub mod readiness;
pub mod redact;
pub mod scan;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod web;
pub mod workers;
