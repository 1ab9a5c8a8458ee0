//! ACME *mechanism* for Portico: account handling, orders, the challenge
//! publication trait, CSR and key generation, renewal-timing math and the
//! classification of CA errors. It obtains certificates when asked; it knows
//! nothing of tenants, Postgres or jobs — who may get a certificate, and when,
//! is decided by the control plane.
//!
//! Filled by the certificates issue; nothing lives here yet.
