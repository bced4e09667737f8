//! Proxy mode: the agent serves a local socket per database and connects
//! upstream over TLS with the current token, so every client works without a
//! password.
//!
//! - [`pg_wire`]: the PostgreSQL protocol as pure functions over bytes;
//! - [`pg_session`]: one client connection, from startup to splice;
//! - [`mysql_wire`] and [`mysql_session`]: the same for MySQL and MariaDB;
//! - [`upstream`]: what a session needs to reach its database;
//! - [`splice`]: the byte pipe after the login;
//! - [`tls`]: upstream TLS per sslmode;
//! - [`cancel`]: cancel keys to upstream addresses;
//! - [`listener`]: sockets, the connection limit and the lifecycle;
//! - [`fdlimit`]: the open-file limit the sessions need;
//! - [`metrics`]: counters by database.

pub mod cancel;
pub mod fdlimit;
pub mod listener;
pub mod metrics;
pub mod mysql_session;
pub mod mysql_wire;
pub mod pg_session;
pub mod pg_wire;
pub mod splice;
pub mod tls;
pub mod upstream;
