//! The Portico edge proxy.
//!
//! Data flows through it like this: a config [`portico_protocol::Snapshot`]
//! (from `--snapshot FILE`, from the data dir's cache at start-up, or from
//! the control plane's config stream) becomes an immutable
//! [`table::RoutingTable`]; [`state::Edge`] swaps tables with one atomic
//! pointer store. With a control plane configured, [`client`] follows its
//! NDJSON stream (snapshots, in one frame or in parts, then deltas),
//! validates each into a new table before swapping it in (a refused one is
//! reported and the old table kept: fail-static), writes the table back to
//! the data dir ([`store`]) after changes, and sends heartbeats with the
//! applied version; [`outbound`] builds its HTTP clients (rustls with ring).
//! A TLS connection first meets the pre-TLS [`tls::Gate`] (ClientHello
//! peek: TLS-ALPN-01 answers, on-demand certificates through [`on_demand`]
//! and [`source`]), then rustls picks the certificate with
//! [`tls::CertResolver`] — one table lookup. Each request goes through the
//! thin pingora hooks in [`proxy`], which ask [`routing`] what to do
//! (challenge answer, 421, redirect, branded page, proxy) and [`upstream`]
//! which target to use. Behind a TCP proxy, [`proxy_protocol`] reads a
//! PROXY v2 header before anything else and makes its source address the
//! client's. [`admin`] serves health and [`metrics`]; [`reload`]
//! re-reads the snapshot file on SIGHUP. The hooks also count each request in
//! per-host 10-second windows ([`traffic`], a bounded queue that drops and
//! counts), which [`client`] ships to the control plane as reports.

pub mod admin;
pub mod build_info;
pub mod challenge_fetch;
pub mod client;
pub mod config;
pub mod metrics;
pub mod on_demand;
pub mod outbound;
pub mod pages;
pub mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod routing;
pub mod source;
pub mod state;
pub mod store;
pub mod table;
pub mod tls;
pub mod traffic;
pub mod upstream;
