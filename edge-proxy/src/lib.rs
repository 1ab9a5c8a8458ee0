//! The Portico edge proxy.
//!
//! Data flows through it like this: a config [`portico_protocol::Snapshot`]
//! (from a file today, from the control plane's stream later) becomes an
//! immutable [`table::RoutingTable`]; deltas produce a new table from the
//! old one, never mutating it, and the proxy swaps tables with one atomic
//! pointer store. TLS handshakes and requests read the current table: one
//! map lookup picks the certificate by SNI and the route by host.
//!
//! The pingora proxy binary (TLS by SNI with the on-demand gate, routing,
//! ACME challenge answers, fail-static local cache) is being built on top of
//! this table; see the edge proxy issue.

pub mod table;
