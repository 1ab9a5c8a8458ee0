//! The Portico control plane.
//!
//! Data flows through it like this: a customer calls the REST API
//! ([`api`]) with an API key; handlers parse every field into typed values
//! ([`hostname::Hostname`], [`target::Target`], ids) on their first line and
//! call the aggregate modules in [`db`], which own all SQL. Every change that
//! matters to someone else is written, in the same transaction, as a row in
//! the `events` outbox. DNS verification ([`dns`]) runs as apalis jobs
//! ([`jobs`]): a periodic fan-out enqueues one `check_domain_dns` job per due
//! domain; the job resolves the records, builds a [`dns::Diagnosis`] and feeds
//! it to the pure status machine in [`domain_status`], whose transition is
//! stored together with its event. [`webhooks`] turns outbox events into
//! signed deliveries to the tenants' endpoints. [`alerts`] pages operators
//! by email and keeps the alert rows the ops API lists. Edges' traffic
//! reports are checked by [`traffic`], queued as `ingest_report` jobs and
//! stored as windows that [`db::traffic`] sums for health and dashboards.
//!
//! [`settings`] turns raw environment variables (and an optional TOML file)
//! into typed, validated settings; [`app`] wires everything into a running
//! server that binaries and tests start the same way.

pub mod alerts;
pub mod api;
pub mod api_key;
pub mod app;
pub mod build_info;
pub mod certs;
pub mod crypto;
pub mod db;
pub mod dev_dns;
pub mod dns;
pub mod domain_status;
pub mod health;
pub mod hostname;
pub mod ids;
pub mod infra;
pub mod jobs;
pub mod ops;
pub mod publish;
pub mod secret;
pub mod settings;
pub mod target;
pub mod telemetry;
pub mod traffic;
pub mod verification;
pub mod webhooks;
