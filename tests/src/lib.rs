//! Shared helpers for the end-to-end tests.

pub mod agentproc;
pub mod flow;
pub mod kubelet;
pub mod localdb;
pub mod mysqlclients;
pub mod pgrds;
pub mod probes;
pub mod stubs;
