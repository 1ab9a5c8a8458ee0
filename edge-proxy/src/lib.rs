//! The pingora edge proxy: TLS termination by SNI with the on-demand gate,
//! host routing from an immutable table swapped with ArcSwap, ACME challenge
//! answers, request recording, stats and a local config cache that keeps it
//! serving when the control plane is away.
//!
//! Filled by the edge proxy issue; nothing lives here yet.
