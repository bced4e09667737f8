//! The RDS IAM token agent: keeps a fresh `rds-db:connect` token in a libpq
//! passfile so that unmodified PostgreSQL clients log in with IAM.
//!
//! One module per job:
//! - [`cli`]: the command line (clap), turned into a [`config::AgentConfig`];
//! - [`region`]: which region to sign for, and why;
//! - [`creds`]: the aws-config credential chain with a cache;
//! - [`credhttp`]: the credential providers' HTTP client, with a body cap;
//! - [`signer`]: presigning the token with aws-sigv4;
//! - [`token`]: reading a token's expiry back;
//! - [`pgpass`]: libpq passfile escaping;
//! - [`mycnf`]: MySQL option-file groups and quoting;
//! - [`files`]: atomic file replacement;
//! - [`agent`]: the refresh loop;
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`;
//! - [`probe`] and [`doctor`]: the `probe` and `doctor` subcommands.

pub mod agent;
pub mod app;
pub mod cli;
pub mod config;
pub mod credhttp;
pub mod creds;
pub mod doctor;
pub use rds_iam_common::files;
pub mod health;
pub mod mycnf;
pub mod outputs;
pub mod pgpass;
pub mod probe;
pub mod proxy;
pub mod signer;
pub mod source;
pub mod token;
