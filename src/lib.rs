//! Loanfolio: a self-hosted platform for mortgage agents. docs/architecture.md has the module
//! map and the dependency rule; README.md the source layout.

// The composition root.
pub mod app;
pub mod cli;
pub mod state;

// The aggregates: each owns its tables (docs/architecture.md).
pub mod admin;
pub mod agents;
pub mod audit;
pub mod documents;
pub mod leads;
pub mod links;
pub mod loans;
pub mod los;
pub mod notifications;
pub mod requests;
pub mod retention;

// The faces: the JSON API and the borrower's upload page.
pub mod http;
pub mod web;

// Shared plumbing, below the aggregates.
pub mod actor;
pub mod auth;
pub mod cache;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod fuzzing;
pub mod integrations;
pub mod mail;
pub mod metrics;
pub mod queue;
pub mod ratelimit;
pub mod readiness;
pub mod redact;
pub mod scan;
pub mod storage;
pub mod telemetry;
pub mod tls;
