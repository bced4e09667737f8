//! Proxy mode: the agent serves a local socket per database, and connects
//! upstream over TLS with the current token, so every client works without a
//! password.

pub mod pg_wire;
