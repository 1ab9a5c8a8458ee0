//! The wire contract between the control plane and the edge proxies: versioned
//! serde types for the config snapshot, deltas, heartbeats, reports and ACME
//! challenge answers. The edge owns it (it says what the edge consumes); the
//! control plane produces it. Plain serde types, no I/O.
//!
//! Filled by the edge proxy issue; nothing lives here yet.
