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
pub mod pgwire;
pub mod probes;
pub mod proxyagent;
pub mod rdslab;
pub mod rt;
pub mod runc;
pub mod stubs;
