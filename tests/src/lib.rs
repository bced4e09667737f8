//! Shared helpers for the end-to-end tests.

pub mod agentproc;
pub mod flow;
pub mod helm;
pub mod kubelet;
pub mod localdb;
pub mod mariadbrds;
pub mod mysqlagent;
pub mod mysqlclients;
pub mod mysqlfake;
pub mod pgrds;
pub mod probes;
pub mod rdslab;
pub mod runc;
pub mod stubs;
