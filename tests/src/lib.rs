//! Shared helpers for the end-to-end tests.

pub mod agentproc;
pub mod flow;
pub mod kubelet;
pub mod mariadbrds;
pub mod pgrds;
pub mod rdslab;
pub mod stubs;
